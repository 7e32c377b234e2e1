"""Where a finished run came from, recorded in ``tables/run_info.json`` (kept in git beside the
tables): commit, machine class, package versions and the lock file's hash, the CPU kernels the
jobs were pinned to, wall time and peak memory from Snakemake's per-job benchmark files.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pandas as pd

from dmae import layout, reproducibility
from dmae.io import write_json


def run_info_path(cfg: dict) -> Path:
    return layout.results_dir(cfg) / "tables" / "run_info.json"


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds in which at least one job ran: a run stopped and resumed later does not
    count the pause, and jobs that ran side by side count once."""
    total, covered_to = 0.0, float("-inf")
    for start, end in sorted(spans):
        total += max(0.0, end - max(start, covered_to))
        covered_to = max(covered_to, end)
    return total


def run_info(cfg: dict, repo: Path = Path(".")) -> dict:
    """Commit, machine and the run's wall time and peak job memory, from its benchmarks."""
    rows = []
    for tsv in sorted((layout.results_dir(cfg) / "benchmarks").rglob("*.tsv")):
        bench = pd.read_csv(tsv, sep="\t")
        end = tsv.stat().st_mtime  # written when the job ended
        rows.append((end - float(bench["s"].iloc[-1]), end, float(bench["max_rss"].iloc[-1])))
    if not rows:
        raise FileNotFoundError(f"{layout.results_dir(cfg) / 'benchmarks'}: no benchmark files; "
                                "run the workflow first")
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    software = reproducibility.software(repo)
    gpu = software["cuda_device"] or "no GPU"
    return {
        "commit": commit,
        # the CPU's own vector ISA: an AVX2-only CPU ran this workflow ~2x slower than an
        # AVX-512 one of the same core count (with native kernels)
        "machine": (f"{os.cpu_count()}-core {platform.machine()} CPU "
                    f"({reproducibility.machine_isa()}), {gpu}"),
        "cpu_vendor": reproducibility.cpu_vendor(),
        "cpu_isa": cfg["runtime"]["cpu_isa"],
        **software,
        "wall_time_min": round(busy_seconds([(r[0], r[1]) for r in rows]) / 60, 1),
        "peak_job_rss_mib": round(max(r[2] for r in rows)),
        "jobs": len(rows),
    }


def write_run_info(cfg: dict, repo: Path = Path(".")) -> Path:
    path = run_info_path(cfg)
    write_json(path, run_info(cfg, repo))
    return path
