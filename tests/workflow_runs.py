"""Workflow runs the tests share: the real snakemake in scratch working directories, and the
smoke chain run twice per session, once locally and once more (through the README's SLURM
command where the session runs the SLURM tests), so that two runs can be compared byte for
byte (conftest.py imports the fixtures)."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import BIN, DEBIAN_FMNIST, REPO

from dmae import config as cfglib
from dmae import layout


def snakemake_command(workdir, configfile, *args, checkout: Path = REPO
                      ) -> tuple[list[str], dict[str, str]]:
    """The real snakemake on the Snakefile of ``checkout`` (this one, or a copy with its own
    library) for ``workdir``, and its environment. ``configfile`` None: none given."""
    # Targets and options first: --configfile takes every value up to the next option.
    cmd = [str(BIN / "snakemake"), "-s", str(checkout / "Snakefile"), "-d", str(workdir), *args,
           *(["--configfile", str(configfile)] if configfile is not None else [])]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    if checkout != REPO:
        env["PYTHONPATH"] = str(checkout / "src")
    return cmd, env


def snakemake(workdir, configfile, *args, check=True, checkout: Path = REPO):
    cmd, env = snakemake_command(workdir, configfile, *args, checkout=checkout)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))  # in order, as a user's file is
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


# ------------------------------------------------------------------ the second smoke run


def readme_cluster_command() -> list[str]:
    """The snakemake line of the README block that tests/test_workflow_slurm.py runs."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- tests/test_workflow_slurm.py runs", 1)[1]
    block = block.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("snakemake ")]
    assert len(lines) == 1, block
    return shlex.split(lines[0])


def on_cluster(command: list[str], workdir: Path, *targets: str) -> list[str]:
    """``command`` (a snakemake line, paths relative to the repository) for a scratch folder,
    with the first status check after 1 s instead of 40 (a one-node cluster is quick)."""
    assert command[0] == "snakemake"
    return [str(BIN / "snakemake"), *command[1:], "-d", str(workdir),
            "--slurm-init-seconds-before-status-checks", "1", *targets]


def cluster_env(cluster) -> dict[str, str]:
    return {**cluster.env, "PATH": f"{BIN}:{cluster.env['PATH']}"}


@dataclass(frozen=True)
class SmokeRerun:
    workdir: Path
    slurm_output: str | None  # Snakemake's output when it ran on the SLURM cluster, else None


@pytest.fixture(scope="session")
def smoke_rerun(request, tmp_path_factory) -> SmokeRerun:
    """The smoke chain again in a fresh folder, started before the first run (smoke_run) so
    that the two overlap. Where this session runs the SLURM tests it is the README's cluster
    command (every job a SLURM job, whose waits the local run fills); elsewhere a local run.
    Tests leave it as it is (they copy it to change it)."""
    if not DEBIAN_FMNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    cluster = None
    if any(item.get_closest_marker("slurm") for item in request.session.items):
        with contextlib.suppress(pytest.skip.Exception):  # no SLURM here: a local run
            cluster = request.getfixturevalue("slurm_cluster")
    root = tmp_path_factory.mktemp("smoke-rerun")
    workdir, log = root / "run", root / "snakemake.log"
    if cluster is not None:
        cmd, cwd, env = on_cluster(readme_cluster_command(), workdir), REPO, cluster_env(cluster)
    else:
        cmd, env = snakemake_command(workdir, write_config(root / "smoke.yaml", smoke_cfg()),
                                     "--cores", "2")
        cwd = root
    with open(log, "w") as out:  # a file, not a pipe, which nobody reads until it ends
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
    try:
        request.getfixturevalue("smoke_run")  # meanwhile, unless an earlier test made it
        proc.wait(timeout=1800)
    finally:
        proc.kill()  # nothing left to kill once it has ended
    output = log.read_text()
    assert proc.returncode == 0, output[-5000:]
    return SmokeRerun(workdir, output if cluster is not None else None)
