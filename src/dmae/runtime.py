"""How a stage runs on this machine: pinned CPU kernels and torch threads (the device it
computes on is dmae.devices' to choose)."""

from __future__ import annotations

import logging
import os

from dmae import reproducibility

log = logging.getLogger(__name__)


def setup(cfg: dict, threads: int | None = None, uses_torch: bool = True) -> None:
    """Pin the CPU kernels the config asks for (before torch computes), then set torch's
    threads. A command that never loads torch (``uses_torch`` False) only pins, which its
    child processes inherit: importing torch to set its threads would cost it seconds."""
    isa = cfg["runtime"]["cpu_isa"]
    pinned = reproducibility.pin_cpu_kernels(isa)
    if pinned:
        log.info("CPU kernels pinned (runtime.cpu_isa %s): %s", isa,
                 " ".join(f"{k}={v}" for k, v in pinned.items()))
        reproducibility.check_pinned(isa)
    threads = threads or cfg["runtime"]["threads"]
    if threads and uses_torch:
        # A job's threads are shared by the processes torchrun started on this node.
        threads = max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        import torch

        torch.set_num_threads(threads)
