"""Faults at any moment of a training run: a process killed (SIGKILL) at chosen points, one
of two DDP processes killed, a resume under another number of processes. Each interrupted
run, resumed after its outputs were deleted (as Snakemake deletes a failed job's), must end
with the bytes of a run that was never interrupted, without training again what resume.pt
already holds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO
from data_fixtures import write_fashion_mnist_fixture

from dmae import config as cfglib
from dmae import layout
from dmae.data import prepare_dataset
from dmae.train import load_resume

WORKER = Path(__file__).parent / "train_faults_worker.py"
OUTPUTS = ("best.safetensors", "best.json", "last.safetensors", "last.json", "metrics.csv")
EPOCHS, STEPS = 4, 8  # 128 images in batches of 16 (one process) or 2 x 8 (two)
HP = {"epochs": EPOCHS, "warmup_epochs": 1, "batch_size": 16, "blr": 2e-2, "sigma": 0.25,
      "eval_noise_samples": 2, "seed": 1, "num_workers": 0}

pytestmark = pytest.mark.slow


def run(out_dir: Path, hp: dict, kill: str | None = None, processes: int = 1):
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone",
                     f"--nproc_per_node={processes}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    cmd = [*launcher, str(WORKER), str(out_dir), json.dumps(hp), *([kill] if kill else [])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**env, "OMP_NUM_THREADS": "1"})


def outputs(out_dir: Path) -> dict[str, bytes]:
    return {name: (out_dir / name).read_bytes() for name in OUTPUTS}


def killed_and_resumed(out_dir: Path, hp: dict, kill: str, processes: int = 1):
    """Run until ``kill``, delete the outputs as Snakemake does, run again; the second run."""
    killed = run(out_dir, hp, kill, processes)
    assert killed.returncode != 0, killed.stderr[-3000:]
    if processes == 1:
        assert killed.returncode == -9, killed.stderr[-3000:]
    for name in OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)
    resumed = run(out_dir, hp, processes=processes)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return resumed


def resumed_at(proc) -> int | None:
    match = re.search(r"resumed \S+ at epoch (\d+)", proc.stderr)
    return int(match[1]) if match else None


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, bytes]:
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    proc = run(out_dir, HP)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    # the fault points below are after the last improvement only if it came first
    assert summary == {"best_epoch": 1, "epoch": EPOCHS}
    return outputs(out_dir)


@pytest.mark.parametrize(("kill", "committed"), [
    ("optimizer_step:12", 1),     # in the middle of epoch 2
    ("copy_checkpoint:1", None),  # best.* of epoch 1 kept, its resume.pt not yet written
    ("save_checkpoint:3", 1),     # last.* of epoch 2 written, its resume.pt not
    ("save_resume:2", 2),         # after the last improvement: best.* is epoch 1's
    (f"save_resume:{EPOCHS}", EPOCHS),  # after the final resume.pt: nothing left to train
])
def test_a_kill_at_any_moment_resumes_to_the_uninterrupted_bytes(tmp_path, uninterrupted,
                                                                  kill, committed):
    resumed = killed_and_resumed(tmp_path, HP, kill)
    assert resumed_at(resumed) == committed, resumed.stderr[-3000:]
    assert outputs(tmp_path) == uninterrupted
    # best.* is kept once, under the epoch it belongs to, beside resume.pt
    assert sorted(p.name for p in tmp_path.glob("resume-best-*")) == [
        "resume-best-1.json", "resume-best-1.safetensors"]


def test_a_resume_state_without_a_kept_best_still_finishes(tmp_path, uninterrupted):
    """A resume.pt written before best.* was kept beside it (an older version), its best.*
    deleted: the run warns that best.* can only come back from a better epoch, and finishes
    with the uninterrupted last.* instead of failing at its next save."""
    run(tmp_path, HP, "save_resume:2")
    for path in [*tmp_path.glob("resume-best-*"), *(tmp_path / n for n in OUTPUTS)]:
        path.unlink(missing_ok=True)
    resumed = run(tmp_path, HP)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "best.* of epoch 1 is gone and no copy was kept" in resumed.stderr
    done = outputs_present(tmp_path)
    assert done == {n: uninterrupted[n] for n in done} and "last.safetensors" in done


def outputs_present(out_dir: Path) -> dict[str, bytes]:
    return {name: (out_dir / name).read_bytes() for name in OUTPUTS if (out_dir / name).exists()}


def test_a_killed_ddp_process_resumes_to_the_uninterrupted_bytes(tmp_path):
    hp = {**HP, "batch_size": 8}
    reference = run(tmp_path / "uninterrupted", hp, processes=2)
    assert reference.returncode == 0, reference.stderr[-3000:]
    resumed = killed_and_resumed(tmp_path / "killed", hp, "save_resume:2", processes=2)
    assert resumed_at(resumed) == 2
    assert outputs(tmp_path / "killed") == outputs(tmp_path / "uninterrupted")


def test_resuming_under_another_world_size_keeps_the_effective_batch_or_refuses(tmp_path):
    two = tmp_path / "two"
    killed = run(two, {**HP, "batch_size": 8}, "save_resume:2", processes=2)
    assert killed.returncode != 0 and load_resume(two / "resume.pt")["world_size"] == 2
    shutil.copytree(two, tmp_path / "refused")

    # 1 x 8 x accum 2 = 2 x 8 x accum 1: the schedule continues where the epoch put it
    one = run(two, {**HP, "batch_size": 8, "accum_iter": 2})
    assert one.returncode == 0, one.stderr[-3000:]
    assert "written by 2 processes, now 1" in one.stderr
    assert resumed_at(one) == 2
    meta = json.loads((two / "last.json").read_text())
    assert (meta["epoch"], meta["step"], meta["world_size"]) == (EPOCHS, EPOCHS * STEPS, 1)

    refused = run(tmp_path / "refused", {**HP, "batch_size": 8})
    assert refused.returncode != 0
    message = refused.stderr.strip().splitlines()[-1]
    assert "ResumeError" in message and "written by 2 processes" in message
    assert "effective batch of 16" in message and "1 processes and 8" in message
    assert load_resume(tmp_path / "refused" / "resume.pt")["epoch"] == 2  # nothing lost


# ----------------------------------------------------------------- the stage, through the CLI


def finetune_job(tmp_path: Path, src: Path | None = None) -> subprocess.CompletedProcess:
    """`dmae finetune` of the smoke config on a small Fashion-MNIST-format set, with the
    library of ``src`` (default: this checkout's)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return subprocess.run([str(BIN / "dmae"), "finetune", "--config", "smoke.yaml", "--model",
                           "micro", "--method", "rs", "--sigma", "0.25", "--threads", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)


def test_a_finished_run_asked_again_writes_its_outputs_without_training(tmp_path):
    """A job killed after its training ended but before Snakemake saw it end is run again
    with its outputs deleted: it writes them from the resume state, the same bytes, and
    trains nothing. After a change of the code it computes with, it starts afresh."""
    spec = write_fashion_mnist_fixture(tmp_path / "source", n_train=120, n_test=20)
    prepare_dataset("fashion-mnist", tmp_path / "data" / "prepared", tmp_path / "raw",
                    val_size=20, source_dir=tmp_path / "source", spec=spec)
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["dataset"]["val_size"] = 20
    cfg["finetune"].update(epochs=3, batch_size=25, max_steps=None)
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    out_dir = tmp_path / layout.finetune_dir(cfglib.validate(cfg), "micro", "rs", "0.25")
    names = ("best.safetensors", "best.json", "last.safetensors", "last.json", "metrics.csv")

    first = finetune_job(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    done = {name: (out_dir / name).read_bytes() for name in names}
    timing = (out_dir / "timing.csv").read_bytes()
    for name in names:
        (out_dir / name).unlink()
    again = finetune_job(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "writing its outputs again" in again.stderr and "resumed" in again.stderr
    assert {name: (out_dir / name).read_bytes() for name in names} == done
    assert (out_dir / "timing.csv").read_bytes() == timing  # no epoch ran again

    changed = tmp_path / "changed"  # a copy of the library whose training computes otherwise
    shutil.copytree(REPO / "src", changed, ignore=shutil.ignore_patterns("__pycache__"))
    engine = changed / "dmae" / "train" / "engine.py"
    text = engine.read_text()
    engine.write_text(text.replace("_EVAL_SEED_OFFSET = 1_000_003", "_EVAL_SEED_OFFSET = 7"))
    assert engine.read_text() != text
    fresh = finetune_job(tmp_path, src=changed)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "the code changed, starting afresh" in fresh.stderr and "resumed" not in fresh.stderr
    assert (out_dir / "timing.csv").read_bytes() != timing
