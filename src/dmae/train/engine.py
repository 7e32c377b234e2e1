"""The training engine shared by DMAE pretraining, fine-tuning and linear probing.

One call of ``train`` runs (or resumes) a whole run in ``out_dir``::

    out_dir/best.{safetensors,json}   best validation checkpoint (dmae.checkpoint layout)
    out_dir/last.{safetensors,json}   latest epoch's weights
    out_dir/resume.pt                 optimizer/scaler/RNG/progress, torch.load(weights_only=True)
    out_dir/resume-best-<epoch>.*     best.* as of resume.pt (a hard link where possible)
    out_dir/metrics.csv               one row per epoch: losses, accuracies, lr (reproducible)
    out_dir/timing.csv                one row per epoch: throughput and wall time (not)

Under ``torchrun`` every rank calls ``train`` with the same arguments; only rank 0 writes.

A kill at any moment loses at most the epochs since the last resume.pt. A resumed run first
writes again whatever of best.*, last.* and metrics.csv is missing (Snakemake deletes a failed
job's outputs), from resume.pt and the best.* it kept, so it ends with the bytes of a run
that was never interrupted even when no later epoch writes them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from dmae.acceleration import amp_dtype, autocast, grad_scaler, use_compile
from dmae.checkpoint import checkpoint_exists, copy_checkpoint, load_into, save_checkpoint
from dmae.models.common import add_gaussian_noise
from dmae.train.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_object,
    gather_objects,
    setup_distributed,
)
from dmae.train.evaluate import classifier_sums, pretrain_loss_sums
from dmae.train.hparams import TrainHParams
from dmae.train.losses import classification_loss, consistency_loss
from dmae.train.optim import build_optimizer, effective_batch, lr_at, peak_lr, set_lr
from dmae.train.state import (
    TIMING_COLUMNS,
    capture_rng,
    load_resume,
    read_metrics,
    restore_rng,
    save_resume,
    seed_everything,
    truncate_metrics,
    write_metrics,
    write_metrics_row,
)

log = logging.getLogger(__name__)

# Keys the engine writes into checkpoint metadata; a caller's ``meta`` may not override them.
_RESERVED_META = frozenset({"task", "hparams", "epoch", "step", "metrics", "metrics_epoch",
                            "selection", "world_size", "effective_batch", "peak_lr", "kind",
                            "dmae_version"})
_EVAL_SEED_OFFSET = 1_000_003  # evaluation noise/masks come from their own seeded stream


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class ResumeError(RuntimeError):
    """resume.pt belongs to a run this one cannot continue exactly."""


def train(model: torch.nn.Module, train_set: Dataset, val_set: Dataset, hp: TrainHParams,
          out_dir: Path, *, meta: dict | None = None, device: str | torch.device | None = None,
          stop_after_epoch: int | None = None, resume: bool = True,
          progress: bool = True) -> dict:
    """Train ``model`` for ``hp.task`` and return the final and best validation metrics.

    Resumes from ``out_dir/resume.pt`` when it exists (``resume=False`` refuses to touch an
    existing run instead). ``stop_after_epoch`` ends the call after that many completed epochs
    (as a kill would; the run stays resumable). ``meta`` (e.g. the data manifest hash) is
    copied into every checkpoint's JSON. Returns ``{"epoch", "step", "final", "final_epoch",
    "best", "train_loss", "out_dir"}``; ``best`` is ``{"epoch", "metric", "value",
    "metrics"}``.
    """
    meta = dict(meta or {})
    clash = sorted(_RESERVED_META & set(meta))
    if clash:
        raise ValueError(f"meta: keys {clash} are written by the engine; expected other names")
    if stop_after_epoch is not None and stop_after_epoch < 1:
        raise ValueError(f"stop_after_epoch: expected an integer >= 1, got {stop_after_epoch}")
    ctx = setup_distributed(device)
    try:
        run = _Run(model, train_set, val_set, hp, Path(out_dir), meta, ctx, progress)
        return run.run(stop_after_epoch=stop_after_epoch, resume=resume)
    finally:
        ctx.close()


# ---------------------------------------------------------------------------- one training step
# Public so that benchmarks/train_throughput.py times exactly the engine's step.


def build_mixup(hp: TrainHParams, model: torch.nn.Module):
    """timm's ``Mixup`` for ``hp.mixup``/``hp.cutmix`` when fine-tuning, else None."""
    if hp.task == "pretrain" or (hp.mixup <= 0 and hp.cutmix <= 0):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=hp.mixup, cutmix_alpha=hp.cutmix, prob=hp.mixup_prob,
                 switch_prob=hp.mixup_switch_prob, mode=hp.mixup_mode,
                 label_smoothing=hp.label_smoothing, num_classes=_num_classes(model))


def training_loss(net: torch.nn.Module, batch: Any, hp: TrainHParams, device: torch.device,
                  dtype: torch.dtype | None, mixup=None) -> torch.Tensor:
    """The loss of one micro-batch, ``(images, labels)`` or images alone for pretraining.

    Pretraining: the model's own loss (it adds noise and masks). Otherwise Gaussian noise on
    the [0, 1] pixels, mixup (``build_mixup``) if given, and cross-entropy, or the consistency
    loss over ``hp.consistency.m`` noisy copies of each image.
    """
    if hp.task == "pretrain":
        imgs = _images(batch).to(device, non_blocking=True)
        with autocast(device, dtype):
            return net(imgs)[0].float()
    imgs, labels = (t.to(device, non_blocking=True) for t in batch[:2])
    copies = hp.consistency.m if hp.consistency.enabled else 1
    x = imgs.repeat(copies, 1, 1, 1) if copies > 1 else imgs
    # noise on [0,1] pixels before the model normalizes, then mixup (paper order)
    x = add_gaussian_noise(x, hp.sigma)
    targets, smoothing = labels, hp.label_smoothing
    if mixup is not None:
        # copies are stacked [c1; c2; ...]: batch-mode mixing pairs element j with the
        # flipped element, so all copies of one image get the same partner image and lambda
        x, soft = mixup(x, labels.repeat(copies))
        targets, smoothing = soft[: len(imgs)], 0.0  # Mixup already smoothed the targets
    with autocast(device, dtype):
        logits = net(x)
    if copies == 1:
        return classification_loss(logits, targets, smoothing)
    c = hp.consistency
    return consistency_loss(logits.chunk(copies), targets, c.lam, c.eta, smoothing)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, lr: float,
                   clip_grad: float | None, params: list[torch.Tensor]) -> None:
    """Set ``lr`` (times each group's ``lr_scale``), clip ``params``' gradients to norm
    ``clip_grad`` if given, step through ``scaler`` and clear the gradients."""
    set_lr(optimizer, lr)
    if clip_grad is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------- helpers


def _num_classes(model: torch.nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if n is None and isinstance(getattr(model, "head", None), torch.nn.Linear):
        n = model.head.out_features
    if not isinstance(n, int):
        raise ValueError("mixup/cutmix: need the number of classes; expected the model to "
                         "have an int attribute num_classes or a Linear head")
    return n


def _derived_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (e.g. seed, epoch, rank)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


class _Run:
    """State of one training run on one rank (built by ``train``)."""

    def __init__(self, model: torch.nn.Module, train_set: Dataset, val_set: Dataset,
                 hp: TrainHParams, out_dir: Path, meta: dict, ctx: DistContext,
                 progress: bool) -> None:
        self.hp, self.out_dir, self.meta, self.ctx = hp, out_dir, meta, ctx
        self.progress = progress and ctx.is_main
        self.device = ctx.device
        self.raw = model.to(self.device)
        self.amp_dtype = amp_dtype(hp.amp, self.device)
        self.scaler = grad_scaler(self.device, self.amp_dtype)

        self.optimizer = build_optimizer(self.raw, hp)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.net: torch.nn.Module = self.raw
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.raw, device_ids=ids)
        self.eval_net: torch.nn.Module = self.raw
        if use_compile(hp.compile, self.device):
            self.net, self.eval_net = torch.compile(self.net), torch.compile(self.raw)
        self.mixup = build_mixup(hp, self.raw)

        self._build_loaders(train_set, val_set)
        self.peak_lr = peak_lr(hp, ctx.world_size)
        self.total_steps = hp.epochs * self.steps_per_epoch
        self.warmup_steps = round(hp.warmup_epochs * self.steps_per_epoch)
        self.selection, self.mode = (("val_loss", "min") if hp.task == "pretrain" else
                                     ("val_smoothed_acc" if hp.eval_noise_samples > 0 else
                                      "val_acc", "max"))

        # progress (restored from resume.pt)
        self.epoch = 0
        self.step = 0
        self.best: dict[str, Any] = {"epoch": None, "metric": self.selection, "value": None,
                                     "metrics": {}}
        self.final: dict[str, float] = {}  # latest validation metrics ...
        self.final_epoch: int | None = None  # ... and the epoch they belong to
        self.train_loss: float | None = None
        self.last_saved: int | None = None  # epoch of the latest resumable checkpoint
        self.lr = 0.0
        self.t_start = time.perf_counter()
        self.wall_before = 0.0  # wall time spent by earlier (resumed) calls

    # ---------------------------------------------------------------------------- setup

    def _build_loaders(self, train_set: Dataset, val_set: Dataset) -> None:
        hp, ctx = self.hp, self.ctx
        if len(val_set) == 0:
            raise ValueError("val_set: empty; expected held-out validation images")
        # DistributedSampler also serves a single process: its order is a permutation drawn
        # from a generator seeded with seed + epoch, so a resumed run sees the same batches.
        self.sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                          shuffle=True, seed=hp.seed, drop_last=False)
        pin = self.device.type == "cuda"
        # Worker seeds (augmentation) come from this generator, reseeded from (seed, epoch,
        # rank) every epoch; workers are not persistent because they would keep their seeds.
        self.loader_rng = torch.Generator()
        self.train_loader = DataLoader(train_set, batch_size=hp.batch_size, sampler=self.sampler,
                                       num_workers=hp.num_workers, pin_memory=pin,
                                       drop_last=True, generator=self.loader_rng)
        self.steps_per_epoch = len(self.train_loader) // hp.accum_iter
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size: {len(self.sampler)} training images per device do not fill "
                f"accum_iter={hp.accum_iter} batches of batch_size={hp.batch_size}; expected a "
                f"smaller batch_size/accum_iter")
        # Validation is sharded without padding (no image counted twice); sums are reduced.
        shard = Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size))
        self.val_loader = DataLoader(shard, batch_size=hp.eval_batch_size or hp.batch_size,
                                     shuffle=False, num_workers=hp.num_workers, pin_memory=pin)

    # ---------------------------------------------------------------------------- resume

    @property
    def resume_path(self) -> Path:
        return self.out_dir / "resume.pt"

    def _load_resume(self) -> None:
        state = load_resume(self.resume_path)
        changed = sorted(k for k, v in self.hp.to_dict().items() if state["hparams"].get(k) != v)
        if changed:
            log.warning("resuming %s with changed hyperparameters: %s", self.out_dir,
                        ", ".join(changed))
        written_by = self._check_world_size(state)
        load_into(self.raw, state["model"], source=str(self.resume_path))
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        if written_by == self.ctx.world_size:
            restore_rng(state["rng"][self.ctx.rank])
        else:
            # Resumes are at epoch boundaries: the step where this world size's schedule
            # stands after the same epochs (same effective batch, so the same lr curve).
            self.step = self.epoch * self.steps_per_epoch
            # Other streams than the uninterrupted run's, but still the same on every rerun.
            seed_everything(self.hp.seed + 7919 * state["epoch"] + self.ctx.rank)
            if self.ctx.is_main:
                log.warning("%s: resume.pt was written by %d processes, now %d: continuing "
                            "at epoch %d, step %d of %d, with new random streams",
                            self.out_dir, written_by, self.ctx.world_size, self.epoch,
                            self.step, self.total_steps)
        self.best, self.final = state["best"], state["final"]
        self.final_epoch = state["final_epoch"]
        self.train_loss, self.lr = state["train_loss"], state["lr"]
        self.wall_before = state["wall_time_s"]
        self.last_saved = self.epoch
        if self.ctx.is_main:
            # metrics.csv as of the resumed epoch: Snakemake deletes a failed or incomplete
            # job's outputs, this file among them, before it runs the job again.
            rows = state.get("metrics_rows")  # absent from resume.pt files of older versions
            if rows is None:
                truncate_metrics(self.out_dir / "metrics.csv", self.epoch)
            else:
                write_metrics(self.out_dir / "metrics.csv", rows)
            truncate_metrics(self.out_dir / "timing.csv", self.epoch, TIMING_COLUMNS)
            log.info("resumed %s at epoch %d, step %d", self.out_dir, self.epoch, self.step)
            self._restore_checkpoints()

    def _check_world_size(self, state: dict[str, Any]) -> int:
        """The world size that wrote ``state``; refuses one whose effective batch differs
        (the learning rate and the steps per epoch would change in the middle of the run)."""
        written_by = state.get("world_size", len(state["rng"]))  # older files: one RNG per rank
        old = state["hparams"]
        before = old["batch_size"] * old["accum_iter"] * written_by
        now = effective_batch(self.hp, self.ctx.world_size)
        if before != now:
            raise ResumeError(
                f"{self.resume_path}: written by {written_by} processes with an effective batch "
                f"of {before} ({written_by} x batch_size {old['batch_size']} x accum_iter "
                f"{old['accum_iter']}); this run has {self.ctx.world_size} processes and "
                f"{now} ({self.ctx.world_size} x {self.hp.batch_size} x {self.hp.accum_iter}). "
                f"Expected the same effective batch: set accum_iter (or batch_size) so that "
                f"it stays {before}, or remove {self.resume_path} to start afresh")
        return written_by

    def _kept_best(self, epoch: int) -> Path:
        return self.out_dir / f"resume-best-{epoch}"

    def _restore_checkpoints(self) -> None:
        """Write again the best.* and last.* that resume.pt's epoch had and that are gone."""
        last, best = self.out_dir / "last", self.out_dir / "best"
        if not checkpoint_exists(last):  # resume.pt and last.* are saved at the same epochs
            save_checkpoint(last, self.raw.state_dict(), self._checkpoint_meta("last",
                                                                               self.final))
            log.info("%s: last.* of epoch %d written again from resume.pt", self.out_dir,
                     self.epoch)
        epoch = self.best["epoch"]
        if epoch is None or checkpoint_exists(best):
            return
        if checkpoint_exists(self._kept_best(epoch)):
            copy_checkpoint(self._kept_best(epoch), best)
            log.info("%s: best.* of epoch %d restored", self.out_dir, epoch)
        else:  # a resume.pt written before best.* were kept beside it
            log.warning("%s: best.* of epoch %d is gone and no copy was kept; it is written "
                        "again only if a later epoch does better", self.out_dir, epoch)

    def _resume_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step": self.step, "hparams": self.hp.to_dict(),
            "model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "best": self.best, "final": self.final,
            "final_epoch": self.final_epoch, "train_loss": self.train_loss, "lr": self.lr,
            "wall_time_s": self._wall(), "world_size": self.ctx.world_size,
        }

    def _wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    # ---------------------------------------------------------------------------- main loop

    def run(self, *, stop_after_epoch: int | None, resume: bool) -> dict:
        exists = broadcast_object(self.resume_path.is_file(), self.ctx)
        if exists and not resume:
            raise FileExistsError(f"{self.resume_path}: a run exists; pass resume=True to "
                                  "continue it or use another out_dir")
        if exists:
            self._load_resume()
        else:
            seed_everything(self.hp.seed + self.ctx.rank)
            if self.ctx.is_main:  # kept by an earlier run: not this one's best
                self._remove_kept_best(keep=None)
        if self.ctx.is_main:
            log.info("%s: %d epochs x %d steps, effective batch %d, peak lr %.3g, device %s, "
                     "world size %d, amp %s", self.hp.task, self.hp.epochs, self.steps_per_epoch,
                     effective_batch(self.hp, self.ctx.world_size), self.peak_lr, self.device,
                     self.ctx.world_size, self.amp_dtype)

        while self.epoch < self.hp.epochs and not self._step_cap_reached():
            if stop_after_epoch is not None and self.epoch >= stop_after_epoch:
                break
            self._run_epoch()
        return self._summary()

    def _step_cap_reached(self) -> bool:
        return self.hp.max_steps is not None and self.step >= self.hp.max_steps

    def _run_epoch(self) -> None:
        hp = self.hp
        self.sampler.set_epoch(self.epoch)
        self.loader_rng.manual_seed(_derived_seed(hp.seed, self.epoch, self.ctx.rank))
        t0 = time.perf_counter()
        train_loss, images = self._train_one_epoch()
        train_time = time.perf_counter() - t0
        self.epoch += 1
        self.train_loss = train_loss
        last = self.epoch == hp.epochs or self._step_cap_reached()
        metrics: dict[str, float] = {}
        if last or self.epoch % hp.eval_every == 0:
            metrics = self._evaluate()
            self.final, self.final_epoch = metrics, self.epoch
        row = {"epoch": self.epoch, "step": self.step, "lr": self.lr, "train_loss": train_loss,
               **metrics}
        timing = {"epoch": self.epoch, "images_per_s": images / max(train_time, 1e-9),
                  "epoch_time_s": time.perf_counter() - t0, "wall_time_s": self._wall()}
        improved = self._update_best(metrics)
        save = last or self.epoch % hp.save_every == 0
        rngs = gather_objects(capture_rng(), self.ctx) if save else None
        if self.ctx.is_main:
            write_metrics_row(self.out_dir / "timing.csv", timing, TIMING_COLUMNS)
            self._write_epoch_outputs(row, metrics, improved, save, rngs)
        self.ctx.barrier()
        if save:
            self.last_saved = self.epoch
        if self.ctx.is_main:
            log.info("epoch %d/%d step %d lr %.3g train_loss %.4f %s %.1f img/s", self.epoch,
                     hp.epochs, self.step, self.lr, train_loss,
                     " ".join(f"{k} {v:.4f}" for k, v in metrics.items()), timing["images_per_s"])

    def _update_best(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.selection)
        if value is None or not math.isfinite(value):
            return False
        best = self.best["value"]
        better = best is None or (value < best if self.mode == "min" else value > best)
        if better:
            self.best = {"epoch": self.epoch, "metric": self.selection, "value": value,
                         "metrics": dict(metrics)}
        return better

    def _write_epoch_outputs(self, row: dict, metrics: dict, improved: bool, save: bool,
                             rngs: list | None) -> None:
        # Order matters for kills: metrics row, best, last, the kept best, then resume.pt,
        # which commits the epoch (a resumed run truncates metrics rows past it). The best.*
        # that an older resume.pt names is removed only once a newer resume.pt is written.
        write_metrics_row(self.out_dir / "metrics.csv", row)
        state = self.raw.state_dict()
        if improved:
            save_checkpoint(self.out_dir / "best", state, self._checkpoint_meta("best", metrics))
        if save:
            save_checkpoint(self.out_dir / "last", state,
                            self._checkpoint_meta("last", self.final))
            kept = None
            if self.best["epoch"] is not None:
                kept = self._kept_best(self.best["epoch"])
                # (best.* is gone only after a resume.pt of a version that kept no copy)
                if not checkpoint_exists(kept) and checkpoint_exists(self.out_dir / "best"):
                    copy_checkpoint(self.out_dir / "best", kept)
            save_resume(self.resume_path, {**self._resume_state(), "rng": rngs,
                                           "metrics_rows": read_metrics(self.out_dir /
                                                                        "metrics.csv")})
            self._remove_kept_best(keep=kept)

    def _remove_kept_best(self, keep: Path | None) -> None:
        for path in self.out_dir.glob(f"{self._kept_best('*').name}.*"):
            if path.with_suffix("") != keep:
                path.unlink()

    def _checkpoint_meta(self, kind: str, metrics: dict) -> dict:
        return {
            **self.meta, "kind": kind, "task": self.hp.task, "hparams": self.hp.to_dict(),
            "epoch": self.epoch, "step": self.step, "metrics": metrics,
            "metrics_epoch": self.epoch if kind == "best" else self.final_epoch,
            "selection": {"metric": self.selection, "mode": self.mode,
                          "best_epoch": self.best["epoch"], "best_value": self.best["value"]},
            "world_size": self.ctx.world_size,
            "effective_batch": effective_batch(self.hp, self.ctx.world_size),
            "peak_lr": self.peak_lr,
        }

    def _summary(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "final": dict(self.final),
                "final_epoch": self.final_epoch,
                "best": dict(self.best), "train_loss": self.train_loss,
                "out_dir": str(self.out_dir)}

    # ---------------------------------------------------------------------------- training

    def _train_one_epoch(self) -> tuple[float, int]:
        """One pass over this epoch's batches; returns (mean train loss, images seen)."""
        hp, ctx = self.hp, self.ctx
        self.net.train()
        n_micro = self.steps_per_epoch * hp.accum_iter
        batches = itertools.islice(self.train_loader, n_micro)
        bar = tqdm(batches, total=n_micro, disable=not self.progress, leave=False,
                   desc=f"{hp.task} {self.epoch + 1}/{hp.epochs}", dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 25.0)  # a line every <30 s in logs
        loss_sum, n_losses, images = 0.0, 0, 0
        losses: list[torch.Tensor] = []  # this step's micro-batch losses, still on the device
        t0 = time.perf_counter()
        for i, batch in enumerate(bar):
            boundary = (i + 1) % hp.accum_iter == 0
            # DDP all-reduces gradients only on the micro-batch that ends an accumulation
            sync = (contextlib.nullcontext() if boundary or not ctx.distributed
                    else self.net.no_sync())
            with sync:
                loss = training_loss(self.net, batch, hp, self.device, self.amp_dtype,
                                     self.mixup)
                self.scaler.scale(loss / hp.accum_iter).backward()
            losses.append(loss.detach().float().reshape(1))
            images += len(_images(batch)) * ctx.world_size
            if not boundary:
                continue
            # One read-back per optimizer step (not per micro-batch), before the step, so
            # that a non-finite loss never reaches the weights.
            values = self._checked_losses(losses, first_micro=i + 1 - len(losses))
            losses = []
            self._optimizer_step()
            for value in values:
                loss_sum, n_losses = loss_sum + value, n_losses + 1
            # refresh=False: the bar redraws at its own interval, not on every step
            bar.set_postfix(loss=f"{values[-1]:.4f}", lr=f"{self.lr:.2e}",
                            img_s=f"{images / max(time.perf_counter() - t0, 1e-9):.0f}",
                            refresh=False)
            if self._step_cap_reached():
                break
        bar.close()
        return loss_sum / max(n_losses, 1), images

    def _checked_losses(self, losses: list[torch.Tensor], first_micro: int) -> list[float]:
        """Each micro-batch's mean loss over ranks, as floats; a non-finite value on any rank
        stops every rank."""
        summed = all_reduce_sum(torch.cat(losses), self.ctx)
        values = [float(v) / self.ctx.world_size for v in summed]
        bad = [j for j, value in enumerate(values) if not math.isfinite(value)]
        if bad:
            where = (f"{self.out_dir / 'last'} and {self.resume_path} (epoch {self.last_saved})"
                     if self.last_saved is not None else "none (no epoch completed yet)")
            raise TrainingDivergedError(
                f"training diverged: non-finite loss ({values[bad[0]]}) at step {self.step} "
                f"(epoch {self.epoch + 1}, micro-batch {first_micro + bad[0]}); last good "
                f"checkpoint: {where}")
        return values

    def _optimizer_step(self) -> None:
        self.lr = lr_at(self.step, self.total_steps, self.warmup_steps, self.peak_lr,
                        self.hp.min_lr)
        optimizer_step(self.optimizer, self.scaler, self.lr, self.hp.clip_grad, self.trainable)
        self.step += 1

    # ---------------------------------------------------------------------------- evaluation

    def _evaluate(self) -> dict[str, float]:
        """Validation metrics, reduced over ranks, from a fixed RNG stream.

        Forking the RNG keeps evaluation from shifting the training noise stream, and reusing
        one seed gives every evaluation the same noise and masks, so epochs compare fairly.
        """
        hp, net = self.hp, self.eval_net
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        net.eval()
        try:
            with torch.random.fork_rng(devices=cuda), autocast(self.device, self.amp_dtype):
                torch.manual_seed(hp.seed + _EVAL_SEED_OFFSET + self.ctx.rank)
                if hp.task == "pretrain":
                    sums = all_reduce_sum(pretrain_loss_sums(net, self.val_loader, self.device),
                                          self.ctx)
                    return {"val_loss": float(sums[0] / sums[1])}
                sums = all_reduce_sum(classifier_sums(net, self.val_loader, hp.sigma,
                                                      hp.eval_noise_samples, self.device),
                                      self.ctx)
        finally:
            self.net.train()
        n = float(sums[3])
        metrics = {"val_loss": float(sums[0]) / n, "val_acc": float(sums[1]) / n}
        if hp.eval_noise_samples > 0:
            metrics["val_smoothed_acc"] = float(sums[2]) / n
        return metrics
