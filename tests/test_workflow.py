"""The Snakemake workflow, driven by the real snakemake in a scratch working directory."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import BIN, DEBIAN_FMNIST, REPO


def snakemake(workdir, configfile, *args, check=True):
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(configfile), *args]
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(workdir)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def smoke_config(tmp_path, **dataset):
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["dataset"].update(dataset)
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dry_run_lists_data_preparation(tmp_path):
    proc = snakemake(tmp_path, smoke_config(tmp_path), "-n")
    assert "prepare_data" in proc.stdout


def test_bad_config_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["certify"]["alpah"] = 0.01
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, path, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "certify.alpah" in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists(), "no job may run on a bad config"


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="Debian's dataset-fashion-mnist missing")
def test_workflow_prepares_fashion_mnist(tmp_path):
    snakemake(tmp_path, smoke_config(tmp_path), "--cores", "1")
    manifest = yaml.safe_load((tmp_path / "data/prepared/fashion-mnist/manifest.json").read_text())
    assert manifest["dataset"] == "fashion-mnist"
    assert (tmp_path / "results/smoke/logs/prepare_fashion-mnist.log").is_file()
    # Nothing left to do: a second run schedules no job.
    proc = snakemake(tmp_path, smoke_config(tmp_path), "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
