"""The workflow on a real one-node SLURM cluster (tests/slurm/cluster.sh) through the SLURM
profile: every job a SLURM job, results byte-identical to a local run; a fine-tuning of two
processes launched once per job; a cancelled job resumed by the profile's retries."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, planned_jobs
from data_fixtures import write_fashion_mnist_fixture
from workflow_runs import (
    cluster_env,
    on_cluster,
    readme_cluster_command,
    run_outputs,
    smoke_cfg,
    snakemake,
    write_config,
)

from dmae import config as cfglib
from dmae import layout, pipeline
from dmae.data import prepare_dataset

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Rules without a command, and light ones on small files (dmae.pipeline.Rule.local): Snakemake
# runs them itself, they never become SLURM jobs.
NOT_SUBMITTED = {"default", "all", *(rule for rule, spec in pipeline.RULES.items() if spec.local)}


def slurm_jobs(cluster, run_id: str) -> list[tuple[str, str, str]]:
    """(job id, state, rule) of every SLURM job of one Snakemake run, in submission order."""
    out = cluster.run("squeue", "--states=all", "-h", "-n", run_id, "-o", "%i|%T|%k").stdout
    jobs = []
    for line in out.split():
        jobid, state, comment = line.split("|")
        rule = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment)[1]
        jobs.append((jobid, state, rule))
    return sorted(jobs, key=lambda job: int(job[0]))


def run_id(proc_output: str) -> str:
    return re.search(r"SLURM run ID: (\S+)", proc_output)[1]


def test_the_readme_command_runs_every_job_on_slurm_with_local_results(slurm_cluster, smoke_run,
                                                                        smoke_rerun, tmp_path):
    """The second smoke run of the session is the README's cluster command (workflow_runs)."""
    command = readme_cluster_command()
    assert "config/smoke.yaml" in command and "profiles/slurm" in command
    assert smoke_rerun.slurm_output is not None, "the second smoke run did not use SLURM"

    jobs = slurm_jobs(slurm_cluster, run_id(smoke_rerun.slurm_output))
    assert {state for _, state, _ in jobs} == {"COMPLETED"}, jobs
    fresh = tmp_path / "fresh"
    planned = planned_jobs(snakemake(fresh, write_config(tmp_path / "s.yaml", smoke_cfg()), "-n"))
    assert Counter(rule for _, _, rule in jobs) == {
        rule: n for rule, n in planned.items() if rule not in NOT_SUBMITTED}
    assert {"merge_certify", "report"} <= NOT_SUBMITTED

    local, _, cfg = smoke_run
    ours, theirs = run_outputs(smoke_rerun.workdir, cfg), run_outputs(local, cfg)
    assert sorted(ours) == sorted(theirs)
    assert any(name.endswith(".safetensors") for name in ours)
    assert any(name.endswith(".tsv") for name in ours) and any("tables/" in n for n in ours)
    assert [name for name in ours if ours[name] != theirs[name]] == []


def ddp_config(tmp_path: Path) -> tuple[Path, dict, Path]:
    """A fine-tuning of two processes (gloo), long enough in epochs to be cancelled halfway,
    on a small Fashion-MNIST-format set prepared in advance; returns (data folder, config,
    the fine-tuned weights as target)."""
    spec = write_fashion_mnist_fixture(tmp_path / "source", n_train=360, n_test=20)
    data = tmp_path / "data"
    prepare_dataset("fashion-mnist", data / "prepared", tmp_path / "raw", val_size=40,
                    source_dir=tmp_path / "source", spec=spec)
    cfg = smoke_cfg()
    cfg["name"] = "slurm-ddp"
    cfg["methods"] = {"rs": {"pretraining": None, "consistency": False}}
    cfg["sigmas"] = [0.25]
    cfg["dataset"]["val_size"] = 40
    # 320 images in steps of 2 x 16: 10 steps per epoch; evaluation only after the last one
    cfg["finetune"].update(epochs=12, batch_size=16, max_steps=None, eval_every=12)
    cfg["resources"] = {"finetune": {"processes": 2, "threads": 2}}
    checkpoint = cfglib.validate(copy.deepcopy(cfg))["certify"]["checkpoint"]
    target = layout.finetune_dir(cfg, "micro", "rs", "0.25") / f"{checkpoint}.safetensors"
    return data, cfg, target


def test_a_cancelled_two_process_finetuning_resumes_to_the_uninterrupted_weights(
        slurm_cluster, tmp_path):
    data, cfg, target = ddp_config(tmp_path)
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    for workdir in (local, slurm):
        shutil.copytree(data, workdir / "data")
    path = write_config(tmp_path / "ddp.yaml", cfg)
    command = [*readme_cluster_command()]
    command[command.index("config/smoke.yaml")] = str(path)
    with ThreadPoolExecutor(1) as pool:
        # The reference, meanwhile: the same job run locally, uninterrupted (torchrun with 2
        # processes too). Running beside the cluster's jobs slows them, never changes them.
        reference = pool.submit(snakemake, local, path, "--cores", "2", str(target))
        proc = subprocess.Popen(on_cluster(command, slurm, str(target)),
                                cwd=REPO, env=cluster_env(slurm_cluster),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        resume = slurm / target.parent / "resume.pt"
        deadline = time.monotonic() + 600
        while not resume.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        running = slurm_cluster.run("squeue", "-h", "-t", "R", "-o", "%i|%k").stdout.split()
        finetune = [line.split("|")[0] for line in running if "rule_finetune" in line]
        assert len(finetune) == 1, (running, proc.poll())
        slurm_cluster.run("scancel", finetune[0])
        output, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, output[-5000:]
        reference.result()

    states = [(state, rule) for _, state, rule in slurm_jobs(slurm_cluster, run_id(output))]
    assert ("CANCELLED", "finetune") in states and states[-1] == ("COMPLETED", "finetune")
    log = (slurm / layout.results_dir(cfg) / "logs" / "finetune" / "micro_rs_sigma_0.25.log")
    log = log.read_text()
    resumed = re.search(r"resumed \S+ at epoch (\d+)", log)
    assert resumed and 1 <= int(resumed[1]) < 12, log[-3000:]
    # torchrun started once in the job: one process group of 2, one rank 0 that logs
    assert len(re.findall(r"world size 2\b", log)) == 1, log[-3000:]

    for name in (target.name, target.with_suffix(".json").name, "metrics.csv"):
        ours, theirs = slurm / target.parent / name, local / target.parent / name
        assert ours.read_bytes() == theirs.read_bytes(), name
