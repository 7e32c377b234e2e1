"""Results that do not depend on the machine: pinned CPU kernels and a record of the software.

PyTorch's CPU kernels choose their code from the processor: ATen's vectorised kernels (AVX2
or AVX-512), oneDNN's convolutions and MKL's matrix products each have one path per
instruction set, and each path rounds differently. The same seed therefore trained different
weights on an AVX2 and an AVX-512 machine. ``runtime.cpu_isa: avx2`` (the schema's default)
pins all three to their AVX2 code, which every x86-64 CPU since 2015 runs, so a CPU run writes
the same bytes on any such machine of the same CPU vendor, given the same package versions
(requirements.lock) and threads per job (the config's ``resources``). Measured
(benchmarks/README.md): on an AVX-512 CPU ATen and oneDNN each changed the trained weights. MKL
honours a named code branch only on Intel CPUs and runs its own code on AMD ones (its
documentation of MKL_CBWR), so an Intel and an AMD CPU compute weights that differ in their
last bits; its one branch for both, COMPATIBLE (SSE2), would halve the speed of fine-tuning
and certification. ``native`` leaves the choice to the libraries, for speed.

GPU runs are outside this promise: cuDNN and cuBLAS are not bitwise stable across GPUs.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from dmae.io import sha256_file

log = logging.getLogger(__name__)

# The environment each library reads when it first runs a kernel (so: before torch computes).
# MKL's STRICT mode also makes its matrix products independent of the thread count.
PINS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_CBWR": "AVX2,STRICT"},
    "native": {},
}
RECORDED_PACKAGES = ("torch", "timm", "numpy", "scipy", "snakemake", "dvc")
LOCK_FILE = "requirements.lock"


def pin_cpu_kernels(isa: str) -> dict[str, str]:
    """Set the environment that pins torch's CPU kernels to ``isa``; return what was set.

    Call it before torch runs its first operation in this process: the libraries read these
    variables once. Child processes (torchrun workers, data loader workers) inherit them.
    """
    if isa not in PINS:
        raise ValueError(f"runtime.cpu_isa: {isa!r}; expected one of {', '.join(PINS)}")
    if PINS[isa] and platform.machine().lower() not in ("x86_64", "amd64"):
        log.warning("runtime.cpu_isa %s: this is a %s CPU, so its CPU results will not match "
                    "an x86-64 machine's", isa, platform.machine())
        return {}
    os.environ.update(PINS[isa])
    return dict(PINS[isa])


def check_pinned(isa: str) -> None:
    """Warn when torch's CPU kernels run another path than ``isa`` (torch started earlier)."""
    if not PINS.get(isa) or "torch" not in sys.modules:  # not started: the pin will hold
        return
    import torch

    used = torch.backends.cpu.get_cpu_capability()
    if used.lower() != PINS[isa]["ATEN_CPU_CAPABILITY"]:
        log.warning("runtime.cpu_isa %s: torch's CPU kernels already run %s in this process; "
                    "results may differ from another machine's", isa, used)


def software(repo: Path = Path(".")) -> dict:
    """Python and package versions, the lock file's hash, the CPU path torch's kernels run
    (the pinned one, e.g. AVX2 on an AVX-512 machine) and the GPU."""
    import torch

    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    lock = Path(repo) / LOCK_FILE
    return {
        "versions": versions,
        "lock_sha256": sha256_file(lock) if lock.is_file() else "no lock file",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "pinned": {k: os.environ[k] for k in PINS["avx2"] if k in os.environ},
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def cpuinfo(field: str) -> str:
    """The value of ``field`` in /proc/cpuinfo's first processor ("" where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == field:
            return value.strip()
    return ""


def cpu_vendor() -> str:
    """Intel, AMD or the CPU's own vendor string: the pinned kernels' bytes are shared by CPUs
    of one vendor (see the module's docstring)."""
    vendor = cpuinfo("vendor_id") or platform.processor() or "unknown"
    return {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(vendor, vendor)


def other_vendor_note(reference: dict) -> str:
    """Why this machine's outputs may differ from a reference run's (its run_info.json) while
    its tables agree: the reference ran on another vendor's CPU. Empty when it did not."""
    theirs, ours = reference.get("cpu_vendor"), cpu_vendor()
    if theirs is None or theirs == ours:
        return ""
    return (f"The reference ran on an {theirs} CPU, this machine has an {ours} one: the pinned "
            "CPU kernels give the same bytes only on CPUs of one vendor, so across vendors the "
            "table comparison is the check (README: Same numbers on another machine).")


def machine_isa() -> str:
    """The widest vector ISA this CPU has (AVX512, AVX2, ...), whatever torch was pinned to."""
    flags = cpuinfo("flags").split()
    for flag, name in (("avx512f", "AVX512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    import torch

    return torch.backends.cpu.get_cpu_capability()
