"""ViTClassifier / LinearProbe: timm names, encoder transfer by name, preprocessing, presets."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from dmae.checkpoint import CheckpointError
from dmae.models import (
    ViTClassifier,
    build_classifier,
    build_linear_probe,
    build_pretrain_model,
    encoder_state_dict,
    get_2d_sincos_pos_embed,
    load_encoder,
    resize_to,
)

# The pretraining model's recipe (a config's pretrainings.dmae), which has no defaults there
DMAE = {"sigma": 0.25, "mask_ratio": 0.75, "loss_on": "all", "norm_pix_loss": True}
MICRO = {"arch": "vit_micro", **DMAE}
HEAD_AND_FC_NORM = ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]


@pytest.fixture(scope="module")
def pretrained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_pretrain_model(MICRO).state_dict()


def test_is_a_timm_vit_with_sincos_init_and_small_head():
    model = build_classifier({**MICRO, "drop_path_rate": 0.1}, num_classes=10)
    assert isinstance(model, VisionTransformer)
    assert model.pos_embed.requires_grad  # trained during fine-tuning, as in MAE
    assert torch.equal(model.pos_embed[0], get_2d_sincos_pos_embed(32, 4, cls_token=True))
    assert 1e-5 < model.head.weight.std() < 3e-5 and torch.all(model.head.bias == 0)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert isinstance(model.norm, torch.nn.Identity)  # avg pooling: fc_norm after the pool
    assert {"fc_norm.weight", "head.weight"} <= set(model.state_dict())
    assert not any("mean" in k or "std" in k for k in model.state_dict())


@pytest.mark.parametrize("arch", ["vit_micro", "vit_base_patch16", "vit_large_patch16"])
def test_encoder_keys_are_a_subset_of_the_classifier_keys(arch):
    with torch.device("meta"):  # no memory, no init cost for the big ones
        encoder = encoder_state_dict(build_pretrain_model({"arch": arch, **DMAE}).state_dict())
        token = build_classifier({"arch": arch, "global_pool": "token"}, 10).state_dict()
        avg = build_classifier({"arch": arch}, 10).state_dict()
    assert {k: v.shape for k, v in encoder.items()} == {k: token[k].shape for k in encoder}
    assert not any(k.startswith(("decoder", "mask_token")) for k in encoder)
    assert set(encoder) - set(avg) == {"norm.weight", "norm.bias"}
    assert set(token) - set(encoder) == {"head.weight", "head.bias"}


@pytest.mark.parametrize(("arch", "classifier", "pretrain"), [
    ("vit_base_patch16", 86_567_656, 111_907_840),    # timm vit_base_patch16_224 / MAE ViT-B
    ("vit_large_patch16", 304_326_632, 329_541_888),  # timm vit_large_patch16_224 / MAE ViT-L
])
def test_paper_presets_have_the_published_parameter_counts(arch, classifier, pretrain):
    with torch.device("meta"):
        cls_model = build_classifier({"arch": arch}, 1000)
        pre_model = build_pretrain_model({"arch": arch, **DMAE})
    assert sum(p.numel() for p in cls_model.parameters()) == classifier
    assert sum(p.numel() for p in pre_model.parameters()) == pretrain
    encoder = sum(v.numel() for v in encoder_state_dict(dict(pre_model.named_parameters()))
                  .values())
    assert encoder == pytest.approx({"vit_base_patch16": 86e6,
                                     "vit_large_patch16": 304e6}[arch], rel=0.01)


def test_load_encoder_with_avg_pool(pretrained_state):
    model = build_classifier(MICRO, 10)
    missing, unexpected = load_encoder(model, pretrained_state)
    assert missing == HEAD_AND_FC_NORM
    assert unexpected == ["norm.bias", "norm.weight"]
    own = model.state_dict()
    for key, value in encoder_state_dict(pretrained_state).items():
        if not key.startswith("norm."):
            assert torch.equal(own[key], value), key


def test_token_classifier_reproduces_the_pretrained_class_token(pretrained_state):
    pre = build_pretrain_model(MICRO)
    pre.load_state_dict(pretrained_state)
    encoder = build_classifier({**MICRO, "global_pool": "token"}, 10)
    missing, unexpected = load_encoder(encoder, pretrained_state)
    assert (missing, unexpected) == (["head.bias", "head.weight"], [])
    imgs = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        # No masking and no noise: the encoder sees every patch (in a shuffled order, which
        # attention does not care about, since positions were added before shuffling).
        latent, _, _ = pre.forward_encoder(pre.normalizer(imgs), mask_ratio=0.0)
        feats = encoder.forward_features(encoder.preprocess(imgs))
    assert torch.allclose(latent[:, 0], feats[:, 0], atol=1e-5)


def test_load_encoder_names_unexpected_gaps(pretrained_state):
    broken = {k: v for k, v in pretrained_state.items() if k != "blocks.1.mlp.fc2.weight"}
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc2\.weight"):
        load_encoder(build_classifier(MICRO, 10), broken)
    wrong = dict(pretrained_state, cls_token=torch.zeros(1, 1, 16))
    with pytest.raises(CheckpointError, match=r"cls_token.*\(1, 1, 16\).*\(1, 1, 32\)"):
        load_encoder(build_classifier(MICRO, 10), wrong)


def test_classifier_resizes_and_normalizes_inside():
    torch.manual_seed(0)
    model = build_classifier({**MICRO, "mean": [0.3], "std": [0.4]}, 10).eval()
    small = torch.rand(2, 1, 14, 14)
    with torch.no_grad():
        by_hand = VisionTransformer.forward(model, (resize_to(small, (28, 28)) - 0.3) / 0.4)
        assert torch.allclose(model(small), by_hand)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_linear_probe_trains_only_its_head(pretrained_state):
    probe = build_linear_probe({**MICRO, "drop_path_rate": 0.2}, 10)
    assert load_encoder(probe, pretrained_state) == ([], [])
    trainable = [n for n, p in probe.named_parameters() if p.requires_grad]
    assert trainable == ["head.1.weight", "head.1.bias"]
    bn = probe.head[0]
    assert not bn.affine and bn.eps == 1e-6
    probe.train()
    assert not probe.encoder.training and bn.training
    logits = probe(torch.rand(4, 1, 28, 28))
    logits.logsumexp(1).mean().backward()
    assert probe.head[1].weight.grad is not None
    assert all(p.grad is None for p in probe.encoder.parameters())
    with pytest.raises(ValueError, match="global_pool"):
        type(probe)(ViTClassifier(28, 7, 1, 10, 32, 2, 2, mean=[0.5], std=[0.5]), 10)
