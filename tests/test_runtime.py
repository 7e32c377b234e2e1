"""How a stage runs on its machine: threads per process, the device of a certification shard."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dmae import config as cfglib
from dmae import runtime


@pytest.fixture
def smoke(repo):
    return cfglib.load(repo / "config" / "smoke.yaml")


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


def test_shards_spread_over_the_visible_gpus():
    assert [runtime.spread(i, 4) for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [runtime.spread(i, 1) for i in range(3)] == [0, 0, 0]  # a SLURM job's own GPU


def test_a_shard_without_gpus_stays_where_the_config_says(smoke):
    assert runtime.shard_device(smoke, (1, 2)) == "cpu"
    smoke["runtime"]["device"] = "auto"
    import torch

    expected = "cuda:1" if torch.cuda.device_count() > 1 else (
        "cuda:0" if torch.cuda.is_available() else None)
    assert runtime.shard_device(smoke, (1, 2)) == expected
