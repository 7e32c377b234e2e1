"""How a stage runs on this machine: pinned CPU kernels, torch threads, the device."""

from __future__ import annotations

import logging

from dmae import reproducibility

log = logging.getLogger(__name__)


def setup(cfg: dict, threads: int | None = None) -> None:
    """Pin the CPU kernels the config asks for (before torch computes), then set threads."""
    isa = cfg["runtime"]["cpu_isa"]
    pinned = reproducibility.pin_cpu_kernels(isa)
    if pinned:
        log.info("CPU kernels pinned (runtime.cpu_isa %s): %s", isa,
                 " ".join(f"{k}={v}" for k, v in pinned.items()))
        reproducibility.check_pinned(isa)
    threads = threads or cfg["runtime"]["threads"]
    if threads:
        import torch

        torch.set_num_threads(threads)


def device(cfg: dict) -> str | None:
    """The config's device; None lets the engine pick CUDA when present."""
    device = cfg["runtime"]["device"]
    return None if device == "auto" else device
