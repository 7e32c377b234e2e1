"""A real one-node SLURM cluster for the tests: tests/slurm/cluster.sh as a session fixture.

conftest.py imports ``slurm_cluster`` so that every test module shares one cluster per session.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "slurm" / "cluster.sh"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")


def missing_tools() -> list[str]:
    # The daemons live in /usr/sbin, which a non-root PATH may lack.
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [t for t in TOOLS if shutil.which(t, path=path) is None]


@dataclass
class SlurmCluster:
    dir: Path
    env: dict[str, str]  # os.environ plus SLURM_CONF (and /usr/sbin on PATH)

    def run(self, *cmd: str, check: bool = True, timeout: float = 120):
        """Run a SLURM client (or anything) against this cluster."""
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def config(self, key: str) -> str:
        """A value of the cluster's slurm.conf."""
        for line in (self.dir / "slurm.conf").read_text().splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1]
        raise KeyError(key)


def _script(action: str, directory: Path, env: dict[str, str]):
    return subprocess.run([str(SCRIPT), action, str(directory)], capture_output=True, text=True,
                          env=env, timeout=180)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd under a temporary directory, started once per session and
    stopped at its end (also after failures)."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)} not found; "
                    "apt-get install slurm-wlm munge)")
    directory = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PATH": os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]),
           "SLURM_CONF": str(directory / "slurm.conf")}
    # A CI timeout's SIGTERM would end pytest without finalizers and leave the daemons running:
    # turn it into the KeyboardInterrupt that Ctrl-C raises, which runs them.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        started = _script("start", directory, env)
        if started.returncode != 0:
            pytest.fail(f"tests/slurm/cluster.sh start {directory} failed:\n"
                        f"{started.stdout}\n{started.stderr}", pytrace=False)
        yield SlurmCluster(directory, env)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stopped = _script("stop", directory, env)
        if stopped.returncode != 0:
            raise RuntimeError(f"tests/slurm/cluster.sh stop {directory} failed:\n"
                               f"{stopped.stdout}\n{stopped.stderr}")
