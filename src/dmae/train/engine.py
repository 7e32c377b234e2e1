"""The training engine shared by DMAE pretraining, fine-tuning and linear probing.

One call of ``train`` runs (or resumes) a whole run in ``out_dir``: the epochs, each one's
optimizer steps and validation, and the choice of the best epoch. What the run optimises is
its objective (``dmae.train.objectives``); the files it writes, and in which order, are
``dmae.train.run_folder``'s.

Under ``torchrun`` every rank calls ``train`` with the same arguments; only rank 0 writes.

A kill at any moment loses at most the epochs since the last resume.pt, and the resumed run
ends with the bytes of a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from dmae.acceleration import amp_dtype, autocast, grad_scaler, use_compile
from dmae.checkpoint import load_into
from dmae.layout import BEST, LAST
from dmae.progress import progress_bar
from dmae.train.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_object,
    gather_objects,
    setup_distributed,
)
from dmae.train.evaluate import validation_batches
from dmae.train.hparams import TrainHParams
from dmae.train.loaders import RunLoaders
from dmae.train.objectives import batch_images, objective_for
from dmae.train.optim import build_optimizer, effective_batch, lr_at, optimizer_step, peak_lr
from dmae.train.run_folder import RunFolder
from dmae.train.state import capture_rng, load_resume, restore_rng, seed_everything

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
        self.objective = objective_for(hp, self.raw)
        self.folder = RunFolder(out_dir)

        self.loaders = RunLoaders(train_set, val_set, hp, ctx)
        self.steps_per_epoch = self.loaders.steps_per_epoch
        self.peak_lr = peak_lr(hp, ctx.world_size)
        self.total_steps = hp.epochs * self.steps_per_epoch
        self.warmup_steps = round(hp.warmup_epochs * self.steps_per_epoch)
        self.selection, self.mode = self.objective.selection

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

    # ---------------------------------------------------------------------------- resume

    def _load_resume(self) -> None:
        state = load_resume(self.folder.resume)
        changed = sorted(k for k, v in self.hp.to_dict().items() if state["hparams"].get(k) != v)
        if changed:
            log.warning("resuming %s with changed hyperparameters: %s", self.out_dir,
                        ", ".join(changed))
        written_by = self._check_world_size(state)
        load_into(self.raw, state["model"], source=str(self.folder.resume))
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
            self.folder.rewind(self.epoch, state.get("metrics_rows"))
            log.info("resumed %s at epoch %d, step %d", self.out_dir, self.epoch, self.step)
            self.folder.restore(self.raw.state_dict(), self._checkpoint_meta(LAST, self.final),
                                self.epoch, self.best["epoch"])

    def _check_world_size(self, state: dict[str, Any]) -> int:
        """The world size that wrote ``state``; refuses one whose effective batch differs
        (the learning rate and the steps per epoch would change in the middle of the run)."""
        written_by = state.get("world_size", len(state["rng"]))  # older files: one RNG per rank
        old = state["hparams"]
        before = old["batch_size"] * old["accum_iter"] * written_by
        now = effective_batch(self.hp, self.ctx.world_size)
        if before != now:
            raise ResumeError(
                f"{self.folder.resume}: written by {written_by} processes with an effective batch "
                f"of {before} ({written_by} x batch_size {old['batch_size']} x accum_iter "
                f"{old['accum_iter']}); this run has {self.ctx.world_size} processes and "
                f"{now} ({self.ctx.world_size} x {self.hp.batch_size} x {self.hp.accum_iter}). "
                f"Expected the same effective batch: set accum_iter (or batch_size) so that "
                f"it stays {before}, or remove {self.folder.resume} to start afresh")
        return written_by

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
        exists = broadcast_object(self.folder.resume.is_file(), self.ctx)
        if exists and not resume:
            raise FileExistsError(f"{self.folder.resume}: a run exists; pass resume=True to "
                                  "continue it or use another out_dir")
        if exists:
            self._load_resume()
        else:
            seed_everything(self.hp.seed + self.ctx.rank)
            if self.ctx.is_main:  # kept by an earlier run: not this one's best
                self.folder.remove_kept_best(keep=None)
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
        self.loaders.start_epoch(self.epoch)
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
            self.folder.write_timing(timing)
            self.folder.write_epoch(
                row, self.raw.state_dict(),
                best_meta=self._checkpoint_meta(BEST, metrics) if improved else None,
                last_meta=self._checkpoint_meta(LAST, self.final) if save else None,
                resume_state={**self._resume_state(), "rng": rngs} if save else None,
                best_epoch=self.best["epoch"])
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

    def _checkpoint_meta(self, kind: str, metrics: dict) -> dict:
        return {
            **self.meta, "kind": kind, "task": self.hp.task, "hparams": self.hp.to_dict(),
            "epoch": self.epoch, "step": self.step, "metrics": metrics,
            "metrics_epoch": self.epoch if kind == BEST else self.final_epoch,
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
        batches = itertools.islice(self.loaders.train, n_micro)
        bar = progress_bar(batches, total=n_micro, disable=not self.progress, leave=False,
                           desc=f"{hp.task} {self.epoch + 1}/{hp.epochs}", dynamic_ncols=True)
        loss_sum, n_losses, images = 0.0, 0, 0
        losses: list[torch.Tensor] = []  # this step's micro-batch losses, still on the device
        t0 = time.perf_counter()
        for i, batch in enumerate(bar):
            boundary = (i + 1) % hp.accum_iter == 0
            # DDP all-reduces gradients only on the micro-batch that ends an accumulation
            sync = (contextlib.nullcontext() if boundary or not ctx.distributed
                    else self.net.no_sync())
            with sync:
                loss = self.objective.loss(self.net, batch, self.device, self.amp_dtype)
                self.scaler.scale(loss / hp.accum_iter).backward()
            losses.append(loss.detach().float().reshape(1))
            images += len(batch_images(batch)) * ctx.world_size
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
            where = (f"{self.folder.last} and {self.folder.resume} (epoch {self.last_saved})"
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
        net = self.eval_net
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        net.eval()
        try:
            with (torch.random.fork_rng(devices=cuda), torch.no_grad(),
                  autocast(self.device, self.amp_dtype)):
                torch.manual_seed(self.hp.seed + _EVAL_SEED_OFFSET + self.ctx.rank)
                batches = validation_batches(self.loaders.val,
                                             f"{self.hp.task} {self.epoch}/{self.hp.epochs}",
                                             progress=self.progress)
                sums = all_reduce_sum(self.objective.validation_sums(net, batches, self.device),
                                      self.ctx)
        finally:
            self.net.train()
        return self.objective.metrics(sums)
