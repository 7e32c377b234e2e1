"""DMAEPretrainModel: patches, masking, position embeddings, noise, loss and a short training."""

from __future__ import annotations

import math

import pytest
import torch

from dmae.models import (
    DMAEPretrainModel,
    add_gaussian_noise,
    build_pretrain_model,
    get_2d_sincos_pos_embed,
    resize_to,
)

# The pretraining model's recipe (a config's pretrainings.dmae), which has no defaults there
DMAE = {"sigma": 0.25, "mask_ratio": 0.75, "loss_on": "all", "norm_pix_loss": True}
MICRO = {"arch": "vit_micro", **DMAE}


def smooth_images(n: int, size: int = 28, chans: int = 1, seed: int = 0) -> torch.Tensor:
    """Random low-frequency [0, 1] images: masked patches are predictable from visible ones."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, chans, 4, 4, generator=gen)
    return resize_to(coarse, (size, size)).clamp(0, 1)


@pytest.fixture(scope="module")
def micro() -> DMAEPretrainModel:
    torch.manual_seed(0)
    return build_pretrain_model(MICRO).eval()


def test_patchify_layout_and_round_trip():
    model = build_pretrain_model({**MICRO, "in_chans": 3, "mean": [0.5] * 3, "std": [0.2] * 3})
    imgs = torch.rand(2, 3, 28, 28)
    patches = model.patchify(imgs)
    assert patches.shape == (2, 16, 7 * 7 * 3)
    # Patch (row 1, col 2) is token 1 * 4 + 2, its values ordered (y, x, channel).
    expected = imgs[1, :, 7:14, 14:21].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[1, 6], expected)
    assert torch.equal(model.unpatchify(patches), imgs)


def test_random_masking_keeps_round_n_per_sample_and_restores(micro):
    b, length, d = 8, 49, 3
    x = torch.randn(b, length, d)
    for ratio in (0.75, 0.6, 0.0):
        torch.manual_seed(1)
        visible, mask, ids_restore = micro.random_masking(x, ratio)
        keep = round(length * (1 - ratio))
        assert visible.shape == (b, keep, d)
        assert torch.all(mask.sum(1) == length - keep)  # 1 marks a removed patch
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        for i in range(b):  # the visible tokens are exactly the unmasked ones
            kept = x[i, mask[i] == 0]
            assert torch.equal(visible[i].sort(0).values, kept.sort(0).values)
    torch.manual_seed(2)
    _, mask, _ = micro.random_masking(x, 0.75)
    assert len({tuple(m.tolist()) for m in mask}) > 1  # each sample draws its own mask

    noise = torch.rand(b, length)
    _, _, ids_restore = micro.random_masking(x, 0.75, noise=noise)
    shuffled = torch.gather(x, 1, noise.argsort(1).unsqueeze(-1).expand(-1, -1, d))
    assert torch.equal(torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d)), x)


def test_sincos_values_by_hand():
    table = get_2d_sincos_pos_embed(8, 4, cls_token=True)
    assert table.shape == (17, 8)
    assert torch.all(table[0] == 0)  # class token row
    # Token (row 1, col 2): channels 0-3 encode the column, 4-7 the row; omega = (1, 1/100).
    r, c = 1.0, 2.0
    hand = [math.sin(c), math.sin(c / 100), math.cos(c), math.cos(c / 100),
            math.sin(r), math.sin(r / 100), math.cos(r), math.cos(r / 100)]
    assert torch.allclose(table[1 + 1 * 4 + 2], torch.tensor(hand), atol=1e-6)
    assert torch.allclose(table[1], torch.tensor([0, 0, 1, 1, 0, 0, 1, 1.0]))  # (0, 0)


def test_pos_embeds_fixed_and_in_state_dict(micro):
    table = get_2d_sincos_pos_embed(32, 4, cls_token=True).unsqueeze(0)
    for name in ("pos_embed", "decoder_pos_embed"):
        param = getattr(micro, name)
        assert not param.requires_grad
        assert torch.equal(param, table)
        assert name in micro.state_dict()
    # Normalization constants are buffers kept out of the state dict.
    assert not any("mean" in k or "std" in k for k in micro.state_dict())
    assert micro.no_weight_decay() <= {n for n, _ in micro.named_parameters()}


def test_mae_initialisation(micro):
    assert torch.all(micro.norm.weight == 1) and torch.all(micro.norm.bias == 0)
    w = micro.blocks[0].attn.qkv.weight
    assert w.abs().max() <= math.sqrt(6 / sum(w.shape)) and torch.all(micro.decoder_pred.bias == 0)
    proj = micro.patch_embed.proj.weight.flatten(1)  # xavier on the flattened view
    assert proj.abs().max() <= math.sqrt(6 / sum(proj.shape))


def test_loss_on_masked_ignores_visible_patches_and_all_does_not():
    clean_01 = smooth_images(2)
    mask = torch.zeros(2, 16)
    mask[:, 4:] = 1  # patches 0-3 visible, 4-15 removed
    for norm_pix in (True, False):
        models = {on: build_pretrain_model({**MICRO, "loss_on": on, "norm_pix_loss": norm_pix})
                  for on in ("all", "masked")}
        clean = models["all"].normalizer(clean_01)
        perfect = models["all"].loss_target(clean)
        visible_off, masked_off = perfect.clone(), perfect.clone()
        visible_off[:, :4] += 1.0
        masked_off[:, 4:] += 1.0
        for model in models.values():
            assert model.forward_loss(clean, perfect, mask).item() == pytest.approx(0, abs=1e-10)
        assert models["masked"].forward_loss(clean, visible_off, mask).item() == 0
        assert models["masked"].forward_loss(clean, masked_off, mask).item() == pytest.approx(1)
        assert models["all"].forward_loss(clean, visible_off, mask).item() == pytest.approx(4 / 16)
        assert models["all"].forward_loss(clean, masked_off, mask).item() == pytest.approx(12 / 16)


def test_norm_pix_target_is_per_patch_standardized(micro):
    target = micro.loss_target(micro.normalizer(torch.rand(2, 1, 28, 28)))
    assert torch.allclose(target.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(2, 16), atol=1e-3)


def test_forward_regresses_the_clean_image_even_with_noise(micro):
    imgs = smooth_images(4)
    torch.manual_seed(3)
    loss, pred, mask = micro(imgs, sigma=0.5)
    assert pred.shape == (4, 16, 49) and mask.shape == (4, 16)
    assert mask.sum(1).eq(12).all()  # 75% of 16 patches removed
    assert torch.allclose(loss, micro.forward_loss(micro.normalizer(imgs), pred, mask))
    noisy_target = micro.normalizer(imgs + 0.5 * torch.randn_like(imgs))
    assert not torch.allclose(loss, micro.forward_loss(noisy_target, pred, mask))


def test_sigma_zero_leaves_input_unchanged(micro):
    imgs = torch.rand(3, 1, 28, 28)
    assert add_gaussian_noise(imgs, 0.0) is imgs
    assert torch.equal(micro.corrupt(imgs, sigma=0.0), imgs)


def test_noise_is_added_in_pixel_units_before_normalization(micro):
    imgs = torch.rand(64, 1, 28, 28)
    torch.manual_seed(4)
    corrupted, recon, mask = micro.reconstruct(imgs, sigma=0.25, mask_ratio=0.0)
    diff = corrupted - imgs
    # In normalized units the std would be 0.25 / 0.353; unclipped, so values leave [0, 1].
    assert diff.std().item() == pytest.approx(0.25, rel=0.02)
    assert abs(diff.mean().item()) < 0.005
    assert corrupted.min() < 0 and corrupted.max() > 1
    assert recon.shape == imgs.shape and mask.sum() == 0


def test_noise_then_bicubic_resize_for_small_inputs(micro):
    small = torch.rand(64, 1, 14, 14)
    torch.manual_seed(5)
    diff = micro.corrupt(small, sigma=0.5) - resize_to(small, (28, 28))
    assert diff.shape == (64, 1, 28, 28)
    # Upsampling after the noise smooths it: std drops below sigma (it would equal sigma
    # if the noise were added after resizing).
    assert 0.6 < diff.std().item() / 0.5 < 0.95
    loss, pred, _ = micro(small)
    assert torch.isfinite(loss) and pred.shape == (64, 16, 49)


def test_reconstruct_greys_out_masked_patches(micro):
    imgs = smooth_images(2)
    corrupted, recon, mask = micro.reconstruct(imgs, sigma=0.0)
    assert corrupted.shape == recon.shape == imgs.shape
    patches = micro.patchify(corrupted)
    mean = micro.normalizer.mean.item()
    assert torch.allclose(patches[mask == 1], torch.full_like(patches[mask == 1], mean))
    assert torch.equal(patches[mask == 0], micro.patchify(imgs)[mask == 0])
    assert torch.isfinite(recon).all()


def test_short_training_reduces_loss_and_reaches_every_part():
    torch.manual_seed(0)
    model = build_pretrain_model({**MICRO, "norm_pix_loss": False})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3,
                            betas=(0.9, 0.95), weight_decay=0.05)
    data = smooth_images(64, seed=1)
    losses = []
    for step in range(30):
        batch = data[(step % 2) * 32:(step % 2 + 1) * 32]
        loss, _, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for name in ("patch_embed.proj.weight", "cls_token", "blocks.0.attn.qkv.weight",
                         "decoder_embed.weight", "mask_token", "decoder_pred.weight"):
                grad = model.get_parameter(name).grad
                assert grad is not None and grad.abs().sum() > 0, name
            assert model.pos_embed.grad is None and model.decoder_pos_embed.grad is None
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.6 * first, losses
