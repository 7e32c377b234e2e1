"""The files of one training run, and the order they are written in so that a kill at any
moment leaves a run that resumes to the bytes of one never interrupted::

    out_dir/best.{safetensors,json}   best validation checkpoint (dmae.checkpoint layout)
    out_dir/last.{safetensors,json}   latest saved epoch's weights
    out_dir/resume.pt                 optimizer/scaler/RNG/progress (dmae.train.state)
    out_dir/resume-best-<epoch>.*     best.* as of resume.pt (a hard link where possible)
    out_dir/metrics.csv               one row per epoch: losses, accuracies, lr (reproducible)
    out_dir/timing.csv                one row per epoch: throughput and wall time (not)

Only rank 0 writes them. Snakemake deletes a failed job's outputs, so a resumed run first
writes again whatever of best.*, last.* and metrics.csv is missing, from resume.pt and the
best.* kept beside it, and ends with all of them even when no later epoch writes them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from dmae import layout
from dmae.checkpoint import checkpoint_exists, copy_checkpoint, save_checkpoint
from dmae.train.state import (
    TIMING_COLUMNS,
    read_metrics,
    save_resume,
    truncate_metrics,
    write_metrics,
    write_metrics_row,
)

log = logging.getLogger(__name__)


class RunFolder:
    """The paths of a run's files in ``out_dir`` and the writes a training makes there."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.resume = out_dir / layout.RESUME
        self.metrics = out_dir / layout.METRICS_CSV
        self.timing = out_dir / layout.TIMING_CSV
        self.best = out_dir / layout.BEST  # checkpoint stems
        self.last = out_dir / layout.LAST

    def kept_best(self, epoch: int | str) -> Path:
        """The stem under which best.* of ``epoch`` is kept while a resume.pt names it."""
        return self.out_dir / layout.KEPT_BEST.format(epoch=epoch)

    # ---------------------------------------------------------------------------- resume

    def rewind(self, epoch: int, metrics_rows: list[dict[str, str]] | None) -> None:
        """metrics.csv and timing.csv as of the resumed ``epoch``: Snakemake deletes a failed
        or incomplete job's outputs, metrics.csv among them, before it runs the job again.
        ``metrics_rows`` are resume.pt's copy, absent from resume.pt files of older versions."""
        if metrics_rows is None:
            truncate_metrics(self.metrics, epoch)
        else:
            write_metrics(self.metrics, metrics_rows)
        truncate_metrics(self.timing, epoch, TIMING_COLUMNS)

    def restore(self, weights: dict[str, torch.Tensor], last_meta: dict, epoch: int,
                best_epoch: int | None) -> None:
        """Write again the best.* and last.* that resume.pt's ``epoch`` had and that are gone:
        last.* from the resumed ``weights``, best.* from its kept copy."""
        if not checkpoint_exists(self.last):  # resume.pt and last.* are saved at the same epochs
            save_checkpoint(self.last, weights, last_meta)
            log.info("%s: last.* of epoch %d written again from resume.pt", self.out_dir, epoch)
        if best_epoch is None or checkpoint_exists(self.best):
            return
        if checkpoint_exists(self.kept_best(best_epoch)):
            copy_checkpoint(self.kept_best(best_epoch), self.best)
            log.info("%s: best.* of epoch %d restored", self.out_dir, best_epoch)
        else:  # a resume.pt written before best.* were kept beside it
            log.warning("%s: best.* of epoch %d is gone and no copy was kept; it is written "
                        "again only if a later epoch does better", self.out_dir, best_epoch)

    # ---------------------------------------------------------------------------- epochs

    def write_timing(self, row: dict[str, Any]) -> None:
        write_metrics_row(self.timing, row, TIMING_COLUMNS)

    def write_epoch(self, row: dict[str, Any], weights: dict[str, torch.Tensor], *,
                    best_meta: dict | None, last_meta: dict | None,
                    resume_state: dict[str, Any] | None, best_epoch: int | None) -> None:
        """An epoch's metrics ``row``; best.* when it improved (``best_meta``); last.*, the
        kept best.* of ``best_epoch`` and resume.pt when it is saved (``last_meta`` and
        ``resume_state``, which gets the metrics rows)."""
        # Order matters for kills: metrics row, best, last, the kept best, then resume.pt,
        # which commits the epoch (a resumed run truncates metrics rows past it). The best.*
        # that an older resume.pt names is removed only once a newer resume.pt is written.
        write_metrics_row(self.metrics, row)
        if best_meta is not None:
            save_checkpoint(self.best, weights, best_meta)
        if resume_state is None:
            return
        save_checkpoint(self.last, weights, last_meta)
        kept = None
        if best_epoch is not None:
            kept = self.kept_best(best_epoch)
            # (best.* is gone only after a resume.pt of a version that kept no copy)
            if not checkpoint_exists(kept) and checkpoint_exists(self.best):
                copy_checkpoint(self.best, kept)
        save_resume(self.resume, {**resume_state, "metrics_rows": read_metrics(self.metrics)})
        self.remove_kept_best(keep=kept)

    def remove_kept_best(self, keep: Path | None) -> None:
        """Remove every kept best.* but ``keep``'s (None: all of them)."""
        for path in self.out_dir.glob(f"{self.kept_best('*').name}.*"):
            if path.with_suffix("") != keep:
                path.unlink()
