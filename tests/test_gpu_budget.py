"""benchmarks/gpu_budget.py projects the GPU-hours of the jobs a dry run of a paper config
plans: the same jobs, each rule's hours from its work and a GPU's throughput."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import BIN, REPO, planned_jobs


def budget(config: str, *args: str) -> str:
    return subprocess.run([sys.executable, REPO / "benchmarks" / "gpu_budget.py", "--config",
                           config, *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout


def hours(text: str) -> dict[str, float]:
    return {m[1]: float(m[2].replace(",", "")) for m in
            re.finditer(r"^  (\S+ \S+|total)\s+([\d,.]+) GPU-hours$", text, re.M)}


@pytest.mark.parametrize("config, overrides", [
    ("config/imagenet.yaml", []),
    # CIFAR-10 starts from the ImageNet run's checkpoint: any file there lets it plan
    ("config/cifar10.yaml", ["pretrainings={in1k: {init: INIT}, in1k_cifar: {init: INIT}}"]),
])
def test_the_budget_projects_the_jobs_a_dry_run_plans(config, overrides, tmp_path):
    init = tmp_path / "last.safetensors"
    init.touch()
    overrides = [o.replace("INIT", str(init)) for o in overrides]
    dry = subprocess.run([BIN / "snakemake", "-n", "-F", "--cores", "1", "--configfile", config,
                          *(["--config", *overrides] if overrides else [])],
                         cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-2000:]
    planned = {rule: n for rule, n in planned_jobs(dry).items() if rule != "default"}
    text = budget(config)
    listed = re.search(r"(\d+) jobs \((.*)\)", text)
    counted = {rule: int(n) for n, rule in (part.split() for part in listed[2].split(", "))}
    # the dry run and the budget use the same config file; overrides only move the init
    assert counted == planned and int(listed[1]) == sum(planned.values())
    projected = hours(text)
    assert projected["total"] == pytest.approx(sum(v for k, v in projected.items()
                                                   if k != "total"), abs=0.2)
    models = {key.split()[1] for key in projected if key != "total"}
    for model in models:
        assert projected[f"certify_shard {model}"] > 0


def test_a_measured_rate_replaces_the_estimate():
    estimated = hours(budget("config/imagenet.yaml"))
    # certification of ViT-B at a rate ten times lower: ten times the hours, nothing else moves
    base = hours(budget("config/imagenet.yaml", "--rate", "certify/vit_base_patch16=1000"))
    slow = hours(budget("config/imagenet.yaml", "--rate", "certify/vit_base_patch16=100"))
    assert slow["certify_shard vit_b"] == pytest.approx(10 * base["certify_shard vit_b"], rel=1e-3)
    assert slow["certify_shard vit_l"] == base["certify_shard vit_l"] == estimated[
        "certify_shard vit_l"]
    assert slow["pretrain vit_b"] == estimated["pretrain vit_b"]
