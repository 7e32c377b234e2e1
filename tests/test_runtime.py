"""How a stage runs on its machine: threads per process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("local_world_size, expected", [(None, 4), ("2", 2), ("8", 1)])
def test_torchrun_processes_share_the_jobs_threads(repo, local_world_size, expected):
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_WORLD_SIZE"}
    if local_world_size:
        env["LOCAL_WORLD_SIZE"] = local_world_size
    code = ("import sys, torch; from dmae import config, runtime; "
            "runtime.setup(config.load(sys.argv[1]), threads=4); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code, str(repo / "config" / "smoke.yaml")],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert int(out) == expected
