"""The device a job computes on: refused when it lacks the GPUs it asked for, and a GPU of
its own for each process (locks shared by every process on the machine)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dmae import config as cfglib
from dmae import devices


@pytest.fixture
def smoke(repo):
    return cfglib.load(repo / "config" / "smoke.yaml")


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


CLAIMER = """
import sys, time
from pathlib import Path
from dmae import devices
print(devices.claim(sys.argv[2].split(","), "test", lock_dir=Path(sys.argv[1]), poll_s=0.1),
      flush=True)
assert devices.claim(sys.argv[2].split(","), "test", lock_dir=Path(sys.argv[1])) is not None
sys.stdin.read()  # hold the GPU until told to let go
"""


def claimer(lock_dir, keys: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLAIMER, str(lock_dir), keys],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_each_process_gets_a_gpu_no_other_process_holds(tmp_path):
    """Two processes that see the same two GPUs take one each; a third waits until one of
    them exits (even killed: the system releases its lock) and takes that one."""
    first, second = claimer(tmp_path, "GPU-a,GPU-b"), claimer(tmp_path, "GPU-a,GPU-b")
    taken = {int(first.stdout.readline()), int(second.stdout.readline())}
    assert taken == {0, 1}
    third = claimer(tmp_path, "GPU-a,GPU-b")
    time.sleep(1.0)
    assert third.poll() is None and not third.stdout.closed
    second.kill()
    second.wait()
    assert int(third.stdout.readline()) in taken
    # A job that sees one of the GPUs under another index (a SLURM job on the same node)
    # still cannot take one that is held.
    other_view = claimer(tmp_path, "GPU-c,GPU-a")
    assert int(other_view.stdout.readline()) == 0
    for proc in (first, third, other_view):
        proc.communicate("", timeout=30)
        assert proc.returncode == 0


def test_the_cpu_needs_no_gpu(smoke):
    assert devices.compute_device(smoke) == "cpu"
    smoke["runtime"]["device"] = "auto"
    chosen = devices.compute_device(smoke)
    assert chosen == "cpu" if visible_gpus() == 0 else chosen.startswith("cuda:")


def test_a_job_that_asked_for_gpus_and_sees_too_few_fails_naming_it(smoke, monkeypatch):
    visible = visible_gpus()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(visible + 1))  # one process more than GPUs
    smoke["runtime"]["device"] = "cuda"
    with pytest.raises(devices.DeviceError) as err:
        devices.device(smoke, job="finetune results/x/sigma_0.25")
    message = str(err.value)
    assert message.startswith("finetune results/x/sigma_0.25: runtime.device is cuda")
    assert f"runs {visible + 1} process(es)" in message and f"sees {visible} GPU(s)" in message
    assert "CUDA_VISIBLE_DEVICES" in message
    smoke["runtime"]["device"] = "auto"  # may fall back to the CPU: no check
    assert devices.device(smoke) is None


def test_a_training_job_without_its_gpus_stops_before_reading_anything(tmp_path, repo):
    """`dmae finetune` with runtime.device cuda and no GPU for it: one line naming the job and
    what it sees, exit 2, before it looks for its data (there is none here)."""
    import yaml

    raw = yaml.safe_load((repo / "config" / "smoke.yaml").read_text())
    raw["runtime"]["device"] = "cuda"
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(raw))
    visible = visible_gpus()
    env = {**os.environ, "LOCAL_WORLD_SIZE": str(visible + 1)}
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dmae"), "finetune",
                           "--config", "gpu.yaml", "--model", "micro", "--method", "rs",
                           "--sigma", "0.25"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr
    assert "finetune results/smoke/finetune/micro/rs/sigma_0.25" in errors[0]
    assert f"sees {visible} GPU(s)" in errors[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("visible", "count"), [("0,1", 2), ("GPU-1f2e,GPU-77aa,2", 3), ("", 0),
                                                 ("-1", 0)])
def test_snakemake_counts_the_gpus_a_job_would_see(monkeypatch, visible, count):
    """What the workflow tells Snakemake the machine has (common.smk), read without torch."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert devices.visible_gpu_count() == count
