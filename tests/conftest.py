"""Shared test helpers: paths of this checkout and of the installed tools."""

from __future__ import annotations

import os

# Before anything loads torch's OpenMP runtime (which reads it once): its idle threads sleep
# instead of spinning. The tests run workflows side by side on few cores (--cores 4 for
# 2-thread jobs, a SLURM node that declares more CPUs than the host has), where spinning
# threads took over half the CPU: the two smoke runs took 387 s (739 CPU-s) spinning, 175 s
# (326 CPU-s) sleeping, on 2 cores. Every process the tests start inherits it; the numbers
# are the same either way (the run comparisons check the bytes).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import re  # noqa: E402
import sys
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401 (one SLURM cluster per session)

# What a run may not do (a skip CI does not accept, a change to this checkout): ci_policy.py
pytest_plugins = ["ci_policy"]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv that runs the tests holds dmae and snakemake
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return BIN


def planned_jobs(proc) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a Snakemake dry run ({} when nothing
    is to be done); ``proc`` is its CompletedProcess."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def pytest_collection_modifyitems(session, config, items):
    """Tests that compare two smoke runs go first: their second run (smoke_rerun) then starts
    before the first and the two overlap, instead of running one after the other."""
    items.sort(key=lambda item: "smoke_rerun" not in getattr(item, "fixturenames", ()))


# After the paths above, which it imports: the smoke runs of the workflow, made once per session.
from workflow_runs import smoke_rerun, smoke_run  # noqa: E402,F401
