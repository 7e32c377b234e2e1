"""Unit tests of the training engine's pieces: hparams, schedule, param groups, losses."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_layer_decay
from torch.utils.data import DataLoader, TensorDataset

from dmae.train import (
    TrainHParams,
    add_gaussian_noise,
    build_optimizer,
    build_param_groups,
    consistency_loss,
    lr_at,
    peak_lr,
    smoothed_vote_accuracy,
)
from dmae.train.evaluate import validation_batches
from dmae.train.state import (
    capture_rng,
    load_resume,
    read_metrics,
    restore_rng,
    save_resume,
    truncate_metrics,
    write_metrics_row,
)


def tiny_vit(**kw) -> VisionTransformer:
    return VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32,
                             depth=2, num_heads=2, global_pool="avg", fc_norm=True, **kw)


# ------------------------------------------------------------------------------ hparams


def test_hparams_roundtrip_and_task_defaults():
    hp = TrainHParams.from_dict({"task": "pretrain", "epochs": 3, "blr": 1.5e-4,
                                 "betas": [0.9, 0.95]})
    assert hp.betas == (0.9, 0.95) and hp.optimizer == "adamw"
    assert TrainHParams.from_dict(hp.to_dict()) == hp
    assert TrainHParams.from_dict({"task": "linprobe"}).optimizer == "lars"
    assert TrainHParams.from_dict({"task": "finetune"}).betas == (0.9, 0.999)
    ft = TrainHParams.from_dict({"consistency": {"enabled": True, "m": 2, "lambda": 2.0,
                                                 "eta": 0.1}})
    assert ft.consistency.lam == 2.0 and ft.consistency.eta == 0.1
    assert ft.to_dict()["consistency"]["lambda"] == 2.0


@pytest.mark.parametrize(("d", "key"), [
    ({"epoch": 3}, "epoch"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"blr": "1e-3"}, "blr"),
    ({"task": "train"}, "task"),
    ({"amp": "fp8"}, "amp"),
    ({"compile": "yes"}, "compile"),
    ({"betas": [0.9]}, "betas"),
    ({"layer_decay": 1.5}, "layer_decay"),
    ({"warmup_epochs": 5, "epochs": 2}, "warmup_epochs"),
    ({"consistency": {"lamda": 1.0}}, "consistency.lamda"),
    ({"consistency": {"m": 1}}, "consistency.m"),
    ({"task": "pretrain", "mixup": 0.8}, "mixup"),
    ({"task": "pretrain", "sigma": 0.25}, "sigma"),
    ({"optimizer": "sgd"}, "optimizer"),
])
def test_hparams_errors_name_the_key(d, key):
    with pytest.raises(ValueError, match=rf"^{key}:"):
        TrainHParams.from_dict(d)


def test_hparams_yaml_string_hint():
    with pytest.raises(ValueError, match="1.0e-3"):
        TrainHParams.from_dict({"blr": "1e-3"})


# ------------------------------------------------------------------------------ schedule


def test_peak_lr_linear_scaling():
    hp = TrainHParams.from_dict({"batch_size": 64, "accum_iter": 4, "blr": 1.5e-4})
    assert peak_lr(hp, world_size=4) == pytest.approx(1.5e-4 * 1024 / 256)  # 6e-4
    assert peak_lr(TrainHParams.from_dict({"lr": 0.3, "batch_size": 8})) == 0.3


def test_lr_schedule_hand_computed():
    # 10 steps, 4 warmup steps, peak 1.0, min 0.1
    values = [lr_at(s, 10, 4, 1.0, 0.1) for s in range(11)]
    assert values[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])  # linear per iteration
    # after warmup: 0.1 + 0.9 * 0.5 * (1 + cos(pi * (s - 4) / 6))
    assert values[5] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 6)))
    assert values[7] == pytest.approx(0.1 + 0.45)  # half way through the cosine
    assert values[10] == pytest.approx(0.1)  # reaches min_lr at the end
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))
    assert lr_at(0, 10, 0, 2.0, 0.0) == 2.0  # no warmup starts at the peak


# ------------------------------------------------------------------------------ param groups


def _groups_by_name(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_param_groups_weight_decay_exclusions():
    model = tiny_vit()
    hp = TrainHParams.from_dict({"weight_decay": 0.05})
    by_name = _groups_by_name(build_param_groups(model, hp))
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    no_decay = {"cls_token", "pos_embed", "patch_embed.proj.bias", "blocks.0.norm1.weight",
                "blocks.0.attn.qkv.bias", "fc_norm.weight", "fc_norm.bias", "head.bias"}
    decay = {"patch_embed.proj.weight", "blocks.1.mlp.fc1.weight", "head.weight"}
    assert all(by_name[n]["weight_decay"] == 0.0 for n in no_decay)
    assert all(by_name[n]["weight_decay"] == 0.05 for n in decay)
    assert all(g["lr_scale"] == 1.0 for g in by_name.values())


def test_param_groups_layer_decay_hand_computed():
    model = tiny_vit()  # depth L = 2
    hp = TrainHParams.from_dict({"layer_decay": 0.5})
    by_name = _groups_by_name(build_param_groups(model, hp))
    expected = {"head.weight": 1.0, "fc_norm.bias": 1.0, "blocks.1.attn.qkv.weight": 0.5,
                "blocks.0.mlp.fc2.bias": 0.25, "patch_embed.proj.weight": 0.125,
                "cls_token": 0.125, "pos_embed": 0.125}
    for name, scale in expected.items():
        assert by_name[name]["lr_scale"] == pytest.approx(scale), name
    # agrees with timm's BEiT-style grouping for a timm ViT
    ids = {id(p): n for n, p in model.named_parameters()}
    timm_groups = param_groups_layer_decay(model, 0.05, model.no_weight_decay(), layer_decay=0.5)
    for g in timm_groups:
        for p in g["params"]:
            assert by_name[ids[id(p)]]["lr_scale"] == pytest.approx(g["lr_scale"])
            assert (by_name[ids[id(p)]]["weight_decay"] > 0) == (g["weight_decay"] > 0)


def test_param_groups_layer_ids_with_token_pooling_follow_mae_not_timm():
    """With global_pool="token" the final norm sits with the head (MAE/BEiT's layer id), so
    timm's param_groups_layer_decay, which puts it with the last block, cannot replace ours."""
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10,
                              embed_dim=32, depth=2, num_heads=2, global_pool="token")
    groups = build_param_groups(model, TrainHParams.from_dict({"layer_decay": 0.5}))
    expected = {  # (layer id, decayed) per parameter, groups sorted by both
        "cls_token": (0, False), "pos_embed": (0, False), "patch_embed.proj.bias": (0, False),
        "patch_embed.proj.weight": (0, True),
        **{f"blocks.{i}.{n}": (i + 1, n.endswith("weight") and "norm" not in n)
           for i in range(2) for n, _ in model.blocks[i].named_parameters()},
        "norm.weight": (3, False), "norm.bias": (3, False), "head.bias": (3, False),
        "head.weight": (3, True),
    }
    layers = sorted(set(expected.values()))
    assert [g["param_names"] for g in groups] == [
        [n for n, _ in model.named_parameters() if expected[n] == key] for key in layers]
    assert [g["lr_scale"] for g in groups] == [0.5 ** (3 - layer) for layer, _ in layers]
    assert [g["weight_decay"] for g in groups] == [0.05 if decay else 0.0 for _, decay in layers]
    ids = {id(p): n for n, p in model.named_parameters()}
    timm_scale = {ids[id(p)]: g["lr_scale"] for g in param_groups_layer_decay(
        model, 0.05, model.no_weight_decay(), layer_decay=0.5) for p in g["params"]}
    assert timm_scale["norm.weight"] == 0.5  # timm: the last block's scale; ours: the head's


def test_lr_scale_applied_by_optimizer_and_frozen_params_skipped():
    model = tiny_vit()
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(("head", "blocks.1"))
    hp = TrainHParams.from_dict({"layer_decay": 0.5, "optimizer": "adamw"})
    opt = build_optimizer(model, hp)
    names = {n for g in opt.param_groups for n in g["param_names"]}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    from dmae.train.optim import set_lr
    set_lr(opt, 0.1)
    lrs = {n: g["lr"] for g in opt.param_groups for n in g["param_names"]}
    assert lrs["head.weight"] == pytest.approx(0.1)
    assert lrs["blocks.1.norm1.weight"] == pytest.approx(0.05)


def test_lars_adapts_weights_not_biases():
    model = torch.nn.Linear(4, 3)
    hp = TrainHParams.from_dict({"task": "linprobe", "weight_decay": 0.0})
    opt = build_optimizer(model, hp)
    adapt = {n: g["always_adapt"] for g in opt.param_groups for n in g["param_names"]}
    assert adapt == {"weight": True, "bias": False}
    assert type(opt).__name__ == "Lars"


# ------------------------------------------------------------------------------ losses


def test_consistency_loss_hand_computed():
    labels = torch.tensor([0, 1])
    l1 = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    l2 = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 2.0, 0.0]])
    lam, eta = 2.0, 0.5
    got = consistency_loss([l1, l2], labels, lam, eta)

    # by hand, one image at a time, in float64
    total_ce, total_kl, total_h = 0.0, 0.0, 0.0
    for b in range(2):
        ps = [np.exp(lg[b].double().numpy()) / np.exp(lg[b].double().numpy()).sum()
              for lg in (l1, l2)]
        pbar = (ps[0] + ps[1]) / 2
        total_ce += sum(-math.log(p[labels[b]]) for p in ps) / 2
        total_kl += sum(float((pbar * np.log(pbar / p)).sum()) for p in ps) / 2
        total_h += float(-(pbar * np.log(pbar)).sum())
    expected = (total_ce + lam * total_kl + eta * total_h) / 2
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_consistency_loss_reduces_to_ce():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    ce = F.cross_entropy(logits, labels, label_smoothing=0.1)
    # off (lam = eta = 0) and one copy are plain cross-entropy
    assert torch.allclose(consistency_loss([logits, logits.flip(0)], labels, 0, 0, 0.1),
                          (ce + F.cross_entropy(logits.flip(0), labels, label_smoothing=0.1)) / 2)
    # identical copies: KL term is 0, only the entropy of p_bar remains
    p = logits.softmax(1)
    h = -(p * p.log()).sum(1).mean()
    got = consistency_loss([logits, logits.clone()], labels, lam=2.0, eta=0.5,
                           label_smoothing=0.1)
    assert torch.allclose(got, ce + 0.5 * h, atol=1e-6)
    assert torch.allclose(consistency_loss([logits, logits], labels, 2.0, 0.0, 0.1), ce)


def test_consistency_loss_accepts_soft_targets():
    logits = [torch.randn(4, 3), torch.randn(4, 3)]
    soft = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    hard = consistency_loss(logits, torch.tensor([0, 1, 2, 0]), 2.0, 0.5)
    assert torch.allclose(consistency_loss(logits, soft, 2.0, 0.5), hard)


def test_gaussian_noise_stats_and_generator():
    x = torch.full((20000,), 0.5)
    y = add_gaussian_noise(x, 0.25, torch.Generator().manual_seed(1))
    assert abs(float(y.mean()) - 0.5) < 0.01 and abs(float(y.std()) - 0.25) < 0.01
    assert y.min() < 0 and y.max() > 1  # not clipped
    z = add_gaussian_noise(x, 0.25, torch.Generator().manual_seed(1))
    assert torch.equal(y, z)
    assert add_gaussian_noise(x, 0.0) is x


def test_smoothed_vote_accuracy():
    class Threshold(torch.nn.Module):
        """Class 1 when the mean pixel exceeds 0.5."""

        def forward(self, x):
            m = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([0.5 - m, m - 0.5], 1)

    x = torch.cat([torch.full((50, 1, 4, 4), 0.2), torch.full((50, 1, 4, 4), 0.8)])
    y = torch.cat([torch.zeros(50, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    torch.manual_seed(0)
    assert smoothed_vote_accuracy(Threshold(), loader, sigma=0.25, samples=5) == 1.0
    # at huge noise the vote is a coin flip per image
    acc = smoothed_vote_accuracy(Threshold(), loader, sigma=50.0, samples=1)
    assert 0.2 < acc < 0.8


def test_validation_reports_progress_on_stderr_unless_disabled(capsys):
    loader = DataLoader(TensorDataset(torch.rand(100, 1, 4, 4), torch.randint(0, 2, (100,))),
                        batch_size=32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    smoothed_vote_accuracy(model, loader, sigma=0.25, samples=1)
    # Its description and its total (100 images in batches of 32) before the first batch.
    err = capsys.readouterr().err
    assert re.search(r"validate smoothed vote sigma=0\.25: +0%\|.*\| 0/4 ", err), err
    smoothed_vote_accuracy(model, loader, sigma=0.25, samples=1, progress=False)
    assert capsys.readouterr().err == ""
    # The bar hands the loader's batches on unchanged.
    for shown, plain in zip(validation_batches(loader, "x", progress=True), loader, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(shown, plain, strict=True))


def test_progress_bars_draw_nothing_from_the_random_stream():
    # A DataLoader draws a seed from torch's RNG each time it is iterated: a bar that iterated
    # it twice (tqdm.auto's does) would move every noise sample validation draws after it.
    loader = DataLoader(TensorDataset(torch.rand(10, 1, 4, 4), torch.zeros(10)), batch_size=4)

    def next_draw(batches) -> torch.Tensor:
        for _ in batches:
            pass
        return torch.rand(4)

    torch.manual_seed(0)
    plain = next_draw(loader)
    for progress in (True, False):
        torch.manual_seed(0)
        assert torch.equal(next_draw(validation_batches(loader, "x", progress=progress)), plain)
    # the variant that must differ: iterating the loader once more moves the stream
    torch.manual_seed(0)
    iter(loader)
    assert not torch.equal(next_draw(loader), plain)


# ------------------------------------------------------------------------------ state files


def test_rng_roundtrip_through_weights_only_file(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_resume(tmp_path / "resume.pt", {"rng": [capture_rng()]})
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    restore_rng(load_resume(tmp_path / "resume.pt")["rng"][0])
    got = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


def test_load_resume_rejects_foreign_file(tmp_path):
    torch.save({"something": 1}, tmp_path / "resume.pt")
    with pytest.raises(ValueError, match="unknown resume format"):
        load_resume(tmp_path / "resume.pt")


def test_metrics_csv_replaces_redone_epochs(tmp_path):
    path = tmp_path / "metrics.csv"
    for epoch in (1, 2, 3):
        write_metrics_row(path, {"epoch": epoch, "step": epoch * 10, "train_loss": 1.0 / epoch})
    write_metrics_row(path, {"epoch": 3, "step": 30, "train_loss": 0.25})
    rows = read_metrics(path)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[2]["train_loss"] == "0.25"
    truncate_metrics(path, 1)
    assert [r["epoch"] for r in read_metrics(path)] == ["1"]
