"""The device a job computes on: the config's choice, checked against the GPUs the job sees,
and a GPU of its own for each process.

A process that computes on CUDA takes a visible GPU that no other process on the machine
holds, and keeps it until it exits (an exclusive file lock per GPU; the system releases it
even after a kill). Locks are named by the GPU's UUID, so jobs that see one GPU under
different indices, as SLURM jobs on a node do, still never share it. Certification shards
and torchrun's ranks thus spread over free GPUs instead of piling onto the first ones.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "DMAE_GPU_LOCKS"  # where the locks live (default: <tmp>/dmae-gpu-locks)
_HELD: dict[str, int] = {}  # this process's GPU (key -> open lock file), held until it exits


class DeviceError(RuntimeError):
    """A job that asked for GPUs sees fewer than it needs."""


def device(cfg: dict, job: str | None = None) -> str | None:
    """The config's device; None lets the engine pick CUDA when present. With ``cuda``, a job
    (``job`` names it in the error) that sees fewer GPUs than it has processes on this node
    fails at once, instead of training or certifying for days on the CPU or one GPU."""
    chosen = cfg["runtime"]["device"]
    if chosen == "cuda":
        require_gpus(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), job)
    return None if chosen == "auto" else chosen


def require_gpus(needed: int, job: str | None = None) -> None:
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible >= needed:
        return
    seen = ", ".join(f"{name}={os.environ[name]}" for name in
                     ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS")
                     if name in os.environ) or "CUDA_VISIBLE_DEVICES unset"
    raise DeviceError(
        f"{job or 'this job'}: runtime.device is cuda and the job runs {needed} process(es) on "
        f"this node, one GPU each, but it sees {visible} GPU(s) ({seen}); expected at least "
        f"{needed}: give the job GPUs (resources.<group>.gpus; run locally with "
        f"--resources gpu=<count>) or set runtime.device: cpu")


def compute_device(cfg: dict, job: str | None = None) -> str:
    """The device one process of ``job`` computes on: ``cpu``, or ``cuda:<i>`` for a free
    visible GPU (``claim_gpu``) where the config asks for CUDA or ``auto`` finds one."""
    chosen = device(cfg, job)
    if chosen == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        return "cpu"  # auto on a machine without CUDA (cuda was refused above)
    return f"cuda:{claim_gpu(job)}"


def claim_gpu(job: str | None = None) -> int:
    """The index (among the visible ones) of a GPU that this process holds from now on."""
    import torch

    keys = []
    for index in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        keys.append(str(uuid) if uuid is not None else _visible_entry(index))
    return claim(keys, job)


def claim(keys: list[str], job: str | None = None, lock_dir: Path | None = None,
          poll_s: float = 2.0) -> int:
    """Take the first of ``keys`` (one per visible GPU) that no other process holds and
    return its position; waits while every one is held."""
    held = [key for key in _HELD if key in keys]
    if held:
        return keys.index(held[0])
    if not keys:
        raise DeviceError(f"{job or 'this job'}: no GPU to claim")
    lock_dir = Path(lock_dir or os.environ.get(LOCK_DIR_ENV)
                    or Path(tempfile.gettempdir()) / "dmae-gpu-locks")
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for position, key in enumerate(keys):
            fd = os.open(lock_dir / f"{key.replace('/', '_')}.lock", os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _HELD[key] = fd
            return position
        if not waited:
            log.warning("%s: all %d visible GPUs are held by other processes (locks in %s); "
                        "waiting for one", job or "this job", len(keys), lock_dir)
            waited = True
        time.sleep(poll_s)


def _visible_entry(index: int) -> str:
    """How CUDA_VISIBLE_DEVICES names visible GPU ``index`` (its own index where unset)."""
    entries = [e for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
    return entries[index].strip() if index < len(entries) else str(index)


def visible_gpu_count() -> int:
    """GPUs this process would see, without loading torch: CUDA_VISIBLE_DEVICES where set,
    else the GPUs nvidia-smi lists (none where it is missing)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        entries = [e.strip() for e in os.environ["CUDA_VISIBLE_DEVICES"].split(",")]
        return len([e for e in entries if e and not e.startswith("-")])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines())
