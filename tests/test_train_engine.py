"""End-to-end tests of ``dmae.train.train`` on tiny real models (CPU, a few seconds each)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from dmae.train import (
    TrainHParams,
    TrainingDivergedError,
    load_resume,
    objectives,
    read_metrics,
    train,
)
from dmae.train.engine import _EVAL_SEED_OFFSET
from dmae.train.evaluate import classifier_sums
from dmae.train.hparams import TASKS
from dmae.train.objectives import Objective, batch_images


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models run faster single-threaded, and the CPU is shared with other jobs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyClassifier(VisionTransformer):
    """timm ViT taking [0,1] pixels and normalizing inside, like the project's classifier."""

    def __init__(self, num_classes: int = 2, **kw):
        super().__init__(img_size=28, patch_size=7, in_chans=1, num_classes=num_classes,
                         embed_dim=32, depth=2, num_heads=2, global_pool="avg", fc_norm=True,
                         **kw)

    def forward(self, x):
        return super().forward((x - 0.5) / 0.5)


class TinyDenoisingAE(nn.Module):
    """Pretraining-model interface: noise + masking inside, returns (mse to clean, pred, mask)."""

    def __init__(self, sigma: float = 0.25, mask_ratio: float = 0.5, hidden: int = 16):
        super().__init__()
        self.sigma, self.mask_ratio = sigma, mask_ratio
        self.pos_embed = nn.Parameter(torch.zeros(1, 784))
        self.enc = nn.Linear(784, hidden)
        self.dec = nn.Linear(hidden, 784)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward(self, imgs):
        x = imgs.flatten(1)
        mask = (torch.rand_like(x) < self.mask_ratio).float()
        noisy = (x + self.sigma * torch.randn_like(x)) * (1 - mask)
        pred = self.dec(torch.relu(self.enc(noisy + self.pos_embed)))
        return ((pred - x) ** 2).mean(), pred, mask


class NaNAfter(TinyDenoisingAE):
    """Returns a NaN loss from the ``after``-th training forward on (a diverging run)."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, imgs):
        loss, pred, mask = super().forward(imgs)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                loss = loss * float("nan")
        return loss, pred, mask


def stripes(n: int, seed: int) -> TensorDataset:
    """Two separable classes: horizontal vs vertical stripes on [0,1] pixels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    pattern = (torch.arange(28) // 2 % 2).float() * 0.4 - 0.2
    x = 0.5 + 0.05 * torch.randn(n, 1, 28, 28, generator=g)
    x[y == 0] += pattern.view(1, 28, 1)
    x[y == 1] += pattern.view(1, 1, 28)
    return TensorDataset(x, y)


def brightness(n: int, seed: int) -> TensorDataset:
    """Two classes of dark (0.3) and bright (0.7) images; even random features separate them."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 + 0.4 * y.float().view(-1, 1, 1, 1) + 0.05 * torch.randn(n, 1, 28, 28, generator=g)
    return TensorDataset(x, y)


def hparams(**kw) -> TrainHParams:
    base = {"epochs": 3, "warmup_epochs": 1, "batch_size": 16, "blr": 2e-2, "eval_noise_samples": 2}
    return TrainHParams.from_dict({**base, **kw})


def fresh_classifier(seed: int = 0, **kw) -> TinyClassifier:
    torch.manual_seed(seed)
    return TinyClassifier(**kw)


def test_finetune_with_consistency_learns_separable_task(tmp_path):
    hp = hparams(epochs=4, batch_size=32, sigma=0.25, layer_decay=0.75, eval_noise_samples=4,
                 consistency={"enabled": True, "m": 2, "lambda": 2.0, "eta": 0.5})
    out = train(fresh_classifier(), stripes(256, 1), stripes(128, 2), hp, tmp_path,
                meta={"data_manifest": "abc123"}, progress=False)
    assert out["final"]["val_acc"] >= 0.9
    assert out["best"]["metric"] == "val_smoothed_acc" and out["best"]["value"] >= 0.9

    best = json.loads((tmp_path / "best.json").read_text())
    last = json.loads((tmp_path / "last.json").read_text())
    assert best["data_manifest"] == "abc123" and best["kind"] == "best"
    assert best["epoch"] == out["best"]["epoch"] and best["hparams"]["sigma"] == 0.25
    assert last["epoch"] == 4 and last["step"] == 4 * 8 and last["metrics"] == out["final"]
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["val_smoothed_acc"] != ""
    assert float(read_metrics(tmp_path / "timing.csv")[-1]["images_per_s"]) > 0
    # train() on a finished run does no work and reports the same result
    again = train(fresh_classifier(1), stripes(256, 1), stripes(128, 2), hp, tmp_path,
                  progress=False)
    assert again["final"] == out["final"] and again["best"] == out["best"]


def test_pretraining_reduces_val_loss(tmp_path):
    torch.manual_seed(0)
    hp = TrainHParams.from_dict({"task": "pretrain", "epochs": 4, "warmup_epochs": 1,
                                 "batch_size": 32, "blr": 0.05, "weight_decay": 0.05})
    out = train(TinyDenoisingAE(), stripes(256, 1), stripes(64, 2), hp, tmp_path,
                progress=False)
    losses = [float(r["val_loss"]) for r in read_metrics(tmp_path / "metrics.csv")]
    assert losses[-1] < 0.8 * losses[0]
    assert out["best"]["metric"] == "val_loss"
    assert out["best"]["value"] == pytest.approx(min(losses), rel=1e-6)
    assert load_file(tmp_path / "best.safetensors").keys() == TinyDenoisingAE().state_dict().keys()


def test_linear_probe_trains_only_the_head(tmp_path):
    model = fresh_classifier()
    model.head = nn.Sequential(nn.BatchNorm1d(32, affine=False), model.head)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("head.")
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    head = model.head[1].weight.detach().clone()
    # LARS moves a weight by about lr * 1e-3 of its norm per step, hence the large lr
    hp = hparams(task="linprobe", lr=10.0, weight_decay=0.0, sigma=0.25, epochs=6)
    assert hp.optimizer == "lars"
    out = train(model, brightness(128, 1), brightness(64, 2), hp, tmp_path, progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert not torch.equal(head, model.head[1].weight)
    assert out["final"]["val_smoothed_acc"] >= 0.9


def _final_state(out_dir):
    return load_file(out_dir / "last.safetensors")


@pytest.mark.parametrize("outputs_deleted", [False, True])
def test_resume_is_bit_identical(tmp_path, outputs_deleted):
    # noise, consistency, mixup/cutmix (numpy RNG) and dropout (torch RNG) all in play
    hp = hparams(sigma=0.5, mixup=0.8, cutmix=1.0, label_smoothing=0.1,
                 consistency={"enabled": True, "eta": 0.1})
    train_set, val_set = stripes(64, 1), stripes(32, 2)

    straight = train(fresh_classifier(drop_rate=0.1), train_set, val_set, hp,
                     tmp_path / "straight", progress=False)

    killed = tmp_path / "killed"
    first = train(fresh_classifier(drop_rate=0.1), train_set, val_set, hp, killed,
                  stop_after_epoch=2, progress=False)
    assert first["epoch"] == 2 and load_resume(killed / "resume.pt")["epoch"] == 2
    if outputs_deleted:  # as Snakemake does with a failed job's outputs before it reruns it
        for name in ("last.safetensors", "last.json", "metrics.csv"):
            (killed / name).unlink()
    # a fresh process would build a differently initialised model; resume must overwrite it
    resumed = train(fresh_classifier(seed=5, drop_rate=0.1), train_set, val_set, hp, killed,
                    progress=False)

    a, b = _final_state(tmp_path / "straight"), _final_state(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final"] == straight["final"] and resumed["best"] == straight["best"]
    metrics = [(d / "metrics.csv").read_bytes() for d in (tmp_path / "straight", killed)]
    assert metrics[0] == metrics[1] and len(read_metrics(killed / "metrics.csv")) == 3
    assert len(read_metrics(killed / "timing.csv")) == 3


class FlippedStripes(Dataset):
    """Stripes with a random horizontal flip drawn in the DataLoader worker."""

    def __init__(self, n: int, seed: int):
        self.base = stripes(n, seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return (x.flip(-1) if torch.rand(()) < 0.5 else x), y


def test_resume_is_bit_identical_with_worker_augmentation(tmp_path):
    hp = hparams(sigma=0.25, num_workers=1, epochs=2, warmup_epochs=0)
    train_set, val_set = FlippedStripes(32, 1), stripes(16, 2)
    train(fresh_classifier(), train_set, val_set, hp, tmp_path / "straight", progress=False)
    train(fresh_classifier(), train_set, val_set, hp, tmp_path / "killed", stop_after_epoch=1,
          progress=False)
    train(fresh_classifier(), train_set, val_set, hp, tmp_path / "killed", progress=False)
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refused_when_asked(tmp_path):
    hp = hparams(epochs=1)
    train(fresh_classifier(), stripes(32, 1), stripes(16, 2), hp, tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume.pt"):
        train(fresh_classifier(), stripes(32, 1), stripes(16, 2), hp, tmp_path, resume=False,
              progress=False)


def test_gradient_accumulation_matches_large_batch(tmp_path):
    # no noise, dropout or batch-dependent layers: accum 2 x 8 == 1 x 16 up to rounding
    train_set, val_set = stripes(64, 1), stripes(16, 2)
    common = {"epochs": 2, "warmup_epochs": 1, "blr": 2e-2, "weight_decay": 0.05,
              "eval_noise_samples": 0}
    runs = {}
    for name, bs, accum in (("accum", 8, 2), ("large", 16, 1)):
        hp = TrainHParams.from_dict({**common, "batch_size": bs, "accum_iter": accum})
        out = train(fresh_classifier(), train_set, val_set, hp, tmp_path / name, progress=False)
        assert out["step"] == 8
        runs[name] = _final_state(tmp_path / name)
    a, b = runs["accum"], runs["large"]
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    assert not torch.equal(a["head.weight"], fresh_classifier().state_dict()["head.weight"])


def test_nan_loss_names_step_and_last_checkpoint(tmp_path):
    data = TensorDataset(torch.rand(64, 1, 28, 28), torch.zeros(64, dtype=torch.long))
    hp = TrainHParams.from_dict({"task": "pretrain", "epochs": 3, "batch_size": 16})
    # 4 steps per epoch: forward #7 (0-based step 6) is in epoch 2, after epoch 1 was saved
    with pytest.raises(TrainingDivergedError, match=r"at step 6 \(epoch 2") as err:
        train(NaNAfter(after=6), data, data, hp, tmp_path, progress=False)
    assert str(tmp_path / "last") in str(err.value) and "(epoch 1)" in str(err.value)
    assert load_resume(tmp_path / "resume.pt")["epoch"] == 1

    with pytest.raises(TrainingDivergedError, match=r"step 0 .*no epoch completed"):
        train(NaNAfter(after=0), data, data, hp, tmp_path / "early", progress=False)


def test_max_steps_caps_the_run(tmp_path):
    hp = hparams(epochs=5, max_steps=3)
    out = train(fresh_classifier(), stripes(64, 1), stripes(16, 2), hp, tmp_path, progress=False)
    assert out["step"] == 3 and out["epoch"] == 1 and out["final"]
    assert json.loads((tmp_path / "last.json").read_text())["step"] == 3


def test_bf16_autocast_agrees_with_fp32_within_its_precision(tmp_path):
    """The CUDA default is bf16 autocast (on the CPU it must be asked for): the same training
    in fp32 and bf16 ends within 1% of each other, in the weights (relative L2 norm of the
    difference; bf16 keeps about 3 significant digits) and in the validation loss."""
    runs = {}
    for amp in ("off", "bf16"):
        hp = hparams(epochs=1, warmup_epochs=0, amp=amp, sigma=0.25,
                     consistency={"enabled": True})
        out = train(fresh_classifier(), stripes(32, 1), stripes(16, 2), hp, tmp_path / amp,
                    progress=False)
        weights = load_file(tmp_path / amp / "last.safetensors")
        assert out["step"] == 2 and weights["head.weight"].dtype == torch.float32
        runs[amp] = out["final"], torch.cat([weights[k].flatten() for k in sorted(weights)])
    (fp32, a), (bf16, b) = runs["off"], runs["bf16"]
    assert not torch.equal(a, b)  # bf16 did compute something else
    assert float((a - b).norm() / a.norm()) <= 0.01
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], rel=0.01)
    with pytest.raises(ValueError, match="^runtime.amp:"):
        train(fresh_classifier(), stripes(32, 1), stripes(16, 2), hparams(amp="fp16"),
              tmp_path / "fp16", device="cpu", progress=False)


def test_meta_may_not_override_engine_keys(tmp_path):
    with pytest.raises(ValueError, match="epoch"):
        train(fresh_classifier(), stripes(32, 1), stripes(16, 2), hparams(), tmp_path,
              meta={"epoch": 7}, progress=False)


class L1Reconstruction(Objective):
    """A pretraining objective of this test's own: the mean absolute error of the model's
    reconstruction (TinyDenoisingAE's prediction of the clean pixels)."""

    selection = ("val_loss", "min")
    losses: list[float] = []
    reported: list[dict[str, float]] = []

    def _error(self, net, imgs):
        _, pred, _ = net(imgs)
        return (pred - imgs.flatten(1)).abs().mean()

    def loss(self, net, batch, device, dtype):
        loss = self._error(net, batch_images(batch).to(device))
        self.losses.append(float(loss.detach()))
        return loss

    def validation_sums(self, net, loader, device):
        sums = torch.zeros(2, dtype=torch.float64)
        for imgs, *_ in loader:
            sums += torch.tensor([float(self._error(net, imgs)) * len(imgs), len(imgs)])
        return sums

    def metrics(self, sums):
        self.reported.append({"val_loss": float(sums[0] / sums[1])})
        return self.reported[-1]


def test_every_task_has_a_registered_objective():
    assert set(objectives.TASK_OBJECTIVES) == set(TASKS)
    assert set(objectives.TASK_OBJECTIVES.values()) <= set(objectives.OBJECTIVES)


def test_a_pretraining_objective_is_one_class_and_its_registration(tmp_path, monkeypatch):
    monkeypatch.setitem(objectives.OBJECTIVES, "l1_reconstruction", L1Reconstruction)
    monkeypatch.setitem(objectives.TASK_OBJECTIVES, "pretrain", "l1_reconstruction")
    monkeypatch.setattr(L1Reconstruction, "losses", [])
    monkeypatch.setattr(L1Reconstruction, "reported", [])
    torch.manual_seed(0)
    hp = TrainHParams.from_dict({"task": "pretrain", "epochs": 2, "batch_size": 16,
                                 "blr": 0.05})
    out = train(TinyDenoisingAE(), stripes(64, 1), stripes(32, 2), hp, tmp_path,
                progress=False)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert len(L1Reconstruction.losses) == 2 * 4  # every micro-batch's loss was this one's
    assert [float(r["train_loss"]) for r in rows] == pytest.approx(
        [sum(L1Reconstruction.losses[:4]) / 4, sum(L1Reconstruction.losses[4:]) / 4])
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(
        [m["val_loss"] for m in L1Reconstruction.reported])
    assert out["best"]["metric"] == "val_loss"


def test_validation_metrics_are_those_of_the_final_weights_under_the_evaluation_seed(tmp_path):
    """The engine's validation, its bar shown, equals ``classifier_sums`` of the saved weights
    on the evaluation seed: nothing else draws from validation's random stream."""
    hp = hparams(epochs=1, warmup_epochs=0, sigma=1.0, eval_noise_samples=1)
    val_set = stripes(96, 2)
    train(fresh_classifier(), stripes(64, 1), val_set, hp, tmp_path)
    model = fresh_classifier()
    model.load_state_dict(load_file(tmp_path / "last.safetensors"))
    model.eval()
    row = read_metrics(tmp_path / "metrics.csv")[-1]

    def smoothed_correct(seed: int) -> int:
        torch.manual_seed(seed)
        loader = DataLoader(val_set, batch_size=hp.batch_size)
        sums = classifier_sums(model, loader, hp.sigma, hp.eval_noise_samples)
        assert int(sums[1]) == round(float(row["val_acc"]) * len(val_set))
        return int(sums[2])

    recorded = round(float(row["val_smoothed_acc"]) * len(val_set))
    assert smoothed_correct(hp.seed + _EVAL_SEED_OFFSET) == recorded
    # the stream matters: other noise gives another count, so the equality above can fail
    assert smoothed_correct(hp.seed + _EVAL_SEED_OFFSET + 1) != recorded


def test_progress_bars_leave_the_runs_files_alone(tmp_path, capsys):
    hp = hparams(epochs=1, warmup_epochs=0, eval_noise_samples=1)
    train(fresh_classifier(), stripes(32, 1), stripes(48, 2), hp, tmp_path / "shown")
    # Training's bar, and validation's with its total: 48 images in batches of 16.
    err = capsys.readouterr().err
    assert re.search(r"finetune 1/1: ", err), err
    assert re.search(r"validate finetune 1/1: +0%\|.*\| 0/3 ", err), err
    train(fresh_classifier(), stripes(32, 1), stripes(48, 2), hp, tmp_path / "quiet",
          progress=False)
    assert capsys.readouterr().err == ""
    # Bars only write to stderr: the run's files are the same bytes.
    for name in ("metrics.csv", "last.safetensors", "best.safetensors"):
        assert (tmp_path / "shown" / name).read_bytes() == (tmp_path / "quiet" / name).read_bytes()
