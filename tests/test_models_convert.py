"""Config validation and import of the authors' .pth checkpoints."""

from __future__ import annotations

import argparse

import pytest
import torch

from dmae.checkpoint import CheckpointError, load_checkpoint, load_into
from dmae.io import sha256_file
from dmae.models import (
    PRESETS,
    build_classifier,
    build_pretrain_model,
    import_checkpoint,
    load_encoder,
    resolve_config,
)

# The pretraining model's recipe (a config's pretrainings.dmae), which has no defaults there
DMAE = {"sigma": 0.25, "mask_ratio": 0.75, "loss_on": "all", "norm_pix_loss": True}
MICRO = {"arch": "vit_micro", **DMAE}


@pytest.fixture(scope="module")
def source_model():
    torch.manual_seed(0)
    return build_pretrain_model(MICRO).eval()


@pytest.fixture
def bare_pth(tmp_path, source_model):
    path = tmp_path / "dmae_micro.pth"
    torch.save(source_model.state_dict(), path)  # bare dict in the MAE layout, as published
    return path


def test_import_bare_state_dict_and_use_it(tmp_path, bare_pth, source_model):
    report = import_checkpoint(bare_pth, tmp_path / "imported", MICRO)
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []
    assert report["source_file"] == "dmae_micro.pth"
    assert report["source_sha256"] == sha256_file(bare_pth)
    state, meta = load_checkpoint(tmp_path / "imported")
    assert meta["model_cfg"] == MICRO and meta["source_sha256"] == report["source_sha256"]

    # Same weights, same randomness -> same pretraining loss as the source model.
    restored = build_pretrain_model(MICRO).eval()
    load_into(restored, state, strict=True)
    imgs = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.manual_seed(1)
        expected = source_model(imgs)[0]
        torch.manual_seed(1)
        assert torch.equal(restored(imgs)[0], expected)

    # And its encoder moves into a classifier by name, giving the same class-token features.
    classifier = build_classifier({**MICRO, "global_pool": "token"}, 10).eval()
    assert load_encoder(classifier, state) == (["head.bias", "head.weight"], [])
    with torch.no_grad():
        latent, _, _ = source_model.forward_encoder(source_model.normalizer(imgs), 0.0)
        feats = classifier.forward_features(classifier.preprocess(imgs))
        assert classifier(imgs).shape == (4, 10)
    assert torch.allclose(feats[:, 0], latent[:, 0], atol=1e-5)


def test_import_model_key_and_module_prefix(tmp_path, source_model):
    path = tmp_path / "wrapped.pth"
    state = {f"module.{k}": v for k, v in source_model.state_dict().items()}
    torch.save({"model": state, "epoch": 3}, path)
    report = import_checkpoint(path, tmp_path / "wrapped", MICRO)
    assert report["missing_keys"] == [] and len(report["notes"]) == 2
    imported, _ = load_checkpoint(tmp_path / "wrapped")
    assert all(torch.equal(imported[k], v) for k, v in source_model.state_dict().items())


def test_renamed_key_is_reported_missing_and_unexpected(tmp_path, source_model, caplog):
    state = source_model.state_dict()
    state["blocks.0.attn.qkv_renamed.weight"] = state.pop("blocks.0.attn.qkv.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    report = import_checkpoint(path, tmp_path / "renamed", MICRO)
    assert report["missing_keys"] == ["blocks.0.attn.qkv.weight"]
    assert report["unexpected_keys"] == ["blocks.0.attn.qkv_renamed.weight"]
    assert "blocks.0.attn.qkv_renamed.weight" in caplog.text
    imported, meta = load_checkpoint(tmp_path / "renamed")
    assert "blocks.0.attn.qkv.weight" not in imported  # never silently filled in
    assert meta["missing_keys"] == report["missing_keys"]
    with pytest.raises(CheckpointError, match="qkv_renamed"):
        import_checkpoint(path, tmp_path / "strict", MICRO, strict=True)


def test_shape_mismatch_names_key_and_shapes(tmp_path, source_model):
    state = source_model.state_dict()
    state["decoder_pred.weight"] = torch.zeros(48, 32)
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"decoder_pred\.weight.*\(48, 32\).*\(49, 32\)"):
        import_checkpoint(path, tmp_path / "bad_shape", MICRO)
    assert not (tmp_path / "bad_shape.safetensors").exists()


def test_refuses_to_unpickle_python_objects(tmp_path, source_model):
    path = tmp_path / "training_ckpt.pth"
    torch.save({"model": source_model.state_dict(), "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        import_checkpoint(path, tmp_path / "out", MICRO)


def test_import_classifier_checkpoint_in_timm_layout(tmp_path):
    cfg = {**MICRO, "kind": "classifier", "num_classes": 10}
    source = build_classifier(MICRO, 10)
    path = tmp_path / "finetuned.pth"
    torch.save({"model": source.state_dict()}, path)
    report = import_checkpoint(path, tmp_path / "finetuned", cfg)
    assert report["kind"] == "classifier" and report["missing_keys"] == []
    with pytest.raises(ValueError, match="num_classes"):
        import_checkpoint(path, tmp_path / "x", {**MICRO, "kind": "classifier"})


def test_explicit_keys_override_the_preset():
    cfg = resolve_config({"arch": "vit_micro", "embed_dim": 64, "num_heads": 4, "sigma": 0.5})
    assert cfg["embed_dim"] == 64 and cfg["depth"] == PRESETS["vit_micro"]["depth"]
    model = build_pretrain_model({"arch": "vit_micro", "embed_dim": 64, "num_heads": 4,
                                  "sigma": 0.5, "mask_ratio": 0.5, "loss_on": "masked",
                                  "norm_pix_loss": False})
    assert model.cls_token.shape == (1, 1, 64) and model.sigma == 0.5
    assert model.mask_ratio == 0.5 and model.loss_on == "masked"


@pytest.mark.parametrize(("override", "key"), [
    ({"img_size": 30}, "img_size"),
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"mask_ratio": -0.1}, "mask_ratio"),
    ({"sigma": -0.25}, "sigma"),
    ({"sigma": float("nan")}, "sigma"),
    ({"loss_on": "visible"}, "loss_on"),
    ({"global_pool": "max"}, "global_pool"),
    ({"drop_path_rate": 1.5}, "drop_path_rate"),
    ({"norm_pix_loss": "yes"}, "norm_pix_loss"),
    ({"mean": [0.5, 0.5, 0.5]}, "mean"),
    ({"std": [0.0]}, "std"),
    ({"embed_dim": 30}, "embed_dim"),
    ({"decoder_num_heads": 3}, "decoder_num_heads"),
    ({"patch_size": 0}, "patch_size"),
    ({"depth": 0}, "depth"),
    ({"arch": "vit_huge_patch14"}, "arch"),
    ({"learning_rate": 1e-3}, "learning_rate"),
    ({"kind": "detector"}, "kind"),
])
def test_bad_config_values_name_the_key(override, key):
    """Checked once, where the value is used: the classifier checks its pooling."""
    build = (lambda c: build_classifier(c, 10)) if key == "global_pool" else build_pretrain_model
    with pytest.raises(ValueError, match=rf"^{key}: "):
        build({**MICRO, **override})


@pytest.mark.parametrize("key", sorted(DMAE))
def test_the_pretraining_model_needs_every_key_of_its_recipe(key):
    """The recipe's values come from the config (its schema's defaults), never from here."""
    cfg = {k: v for k, v in MICRO.items() if k != key}
    with pytest.raises(ValueError, match=rf"^{key}: missing from the model config"):
        build_pretrain_model(cfg)
    assert build_classifier({"arch": "vit_micro"}, 10).num_classes == 10


def test_classifier_builder_checks_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier(MICRO, 0)
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier({**MICRO, "num_classes": 100}, 10)
