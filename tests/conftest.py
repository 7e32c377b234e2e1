"""Shared test helpers: paths of this checkout and of the installed tools."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from slurm_cluster import slurm_cluster  # noqa: F401 (one SLURM cluster per session)

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
