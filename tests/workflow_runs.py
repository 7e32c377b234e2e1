"""Workflow runs the tests share: the real snakemake in scratch working directories, and one
smoke run of the whole chain per session (conftest.py imports the fixture)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, DEBIAN_FMNIST, REPO

from dmae import config as cfglib
from dmae import layout


def snakemake(workdir, configfile, *args, check=True):
    # Targets and options first: --configfile takes every value up to the next option.
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args,
           "--configfile", str(configfile)]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def smoke_cfg() -> dict:
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole smoke chain, run once per session: (workdir, config path, config dict).

    Tests leave its results as they are (they dry-run edited configs, or copy the folder).
    """
    if not DEBIAN_FMNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    workdir = tmp_path_factory.mktemp("smoke")
    path = write_config(workdir / "smoke.yaml", smoke_cfg())
    # 4 cores for 2-thread jobs: two jobs overlap their start-up and waits on a 2-core
    # machine; every job keeps its threads, so the bytes are those of --cores 2
    snakemake(workdir, path, "--cores", "4")
    return workdir, path, cfglib.load(path)


def run_outputs(workdir: Path, cfg: dict) -> dict[str, bytes]:
    """Every file a run leaves under results/<name> that is a result (no logs, timings,
    resume state or Snakemake's own records)."""
    root = workdir / layout.results_dir(cfg)
    skip = ("logs", "benchmarks")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.parts[len(root.parts)] not in skip
            and p.name not in ("resume.pt", "timing.csv", "run.json", "config.yaml")}
