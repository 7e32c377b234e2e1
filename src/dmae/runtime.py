"""How a stage runs on this machine: pinned CPU kernels, torch threads, the device."""

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


def device(cfg: dict) -> str | None:
    """The config's device; None lets the engine pick CUDA when present."""
    device = cfg["runtime"]["device"]
    return None if device == "auto" else device


def shard_device(cfg: dict, shard: tuple[int, int] | None) -> str | None:
    """The device of one certification shard: shards running side by side on a machine with
    several visible GPUs take one each, not all cuda:0. A SLURM job sees only the GPU it was
    given, which is then its device 0."""
    chosen = device(cfg)
    if chosen == "cpu" or shard is None:
        return chosen
    import torch

    if not torch.cuda.is_available():
        return chosen  # auto: the CPU; cuda: fails where the model moves, naming the device
    return f"cuda:{spread(shard[0], torch.cuda.device_count())}"


def spread(shard_index: int, visible_gpus: int) -> int:
    """The GPU of shard ``shard_index``: round robin over the visible ones."""
    return shard_index % visible_gpus
