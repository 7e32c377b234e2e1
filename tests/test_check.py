"""`make check` (dmae.ops.check) on a CPU of either vendor: a clone of the repository that ran the
tiny pipeline, its outputs pulled, checked against dvc.lock where the committed run was made
on this machine's CPU vendor, else against the reference hashes of this vendor, else by its
tables alone, saying so (real git, dvc and make)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO
from dvc_repos import CONFIG, NAME, make, pushed_repository, run, tool_env

from dmae import code_identity, layout
from dmae import config as cfglib
from dmae.ops import check
from dmae.ops.dvc import stages as dvcstages
from dmae.ops.dvc import sync as dvcsync
from dmae.report import registry
from dmae.reproducibility import cpu_vendor


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    return pushed_repository(tmp_path_factory)  # one build for the DVC tests


def clone_of_a_run_made_on(pushed, name: str, vendor: str) -> tuple[Path, dict]:
    """A clone with the pushed outputs, whose committed run_info.json names ``vendor``."""
    root, home, origin = pushed
    clone = root / name
    run(["git", "clone", "-q", origin, clone], cwd=root)
    env = tool_env(home, clone)
    run([BIN / "dvc", "pull"], cwd=clone, env=env)
    info = clone / "results" / NAME / "tables" / "run_info.json"
    info.write_text(json.dumps({"cpu_vendor": vendor, "machine": "a test"}))
    run(["git", "add", str(info)], cwd=clone, env=env)
    run(["git", "commit", "-qm", f"the run was made on an {vendor} CPU"], cwd=clone, env=env)
    return clone, env


def dmae_check(clone: Path, env: dict, *args: str):
    return run([BIN / "dmae", "check", "--config", CONFIG, *args], cwd=clone, env=env,
               check=False)


def a_checkpoint(clone: Path) -> Path:
    return next((clone / "results" / NAME / "finetune").rglob("best.safetensors"))


@pytest.mark.slow
def test_on_the_vendor_of_the_committed_run_dvc_lock_decides(pushed):
    clone, env = clone_of_a_run_made_on(pushed, "check-same", cpu_vendor())
    proc = make("check", clone, env)  # the Makefile's own recipe
    assert "cells:" in proc.stdout and "identical" in proc.stdout
    assert f"check: every output has the hash dvc/{NAME}/dvc.lock records" in proc.stdout
    # the bytes are what counts, not DVC's cache (a rerun's outputs are in none)
    shutil.rmtree(clone / ".dvc" / "cache")
    proc = dmae_check(clone, env)
    assert proc.returncode == 0 and "every output has the hash" in proc.stdout, proc.stdout

    checkpoint = a_checkpoint(clone)
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    proc = dmae_check(clone, env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"  modified: {checkpoint.relative_to(clone)}" in proc.stdout
    assert "check: 1 outputs differ from what" in proc.stdout
    # an output DVC does not cache (cache: false: the figures, the tables) is checked too
    figure = next((clone / "results" / NAME / "figures").glob("*.png"))
    figure.write_bytes(figure.read_bytes() + b"\0")
    proc = dmae_check(clone, env)
    assert f"  modified: {figure.relative_to(clone)}" in proc.stdout, proc.stdout
    assert "check: 2 outputs differ from what" in proc.stdout
    # a folder output (the prepared dataset) is DVC's to hash
    prepared = next(p for p in sorted((clone / "data" / "prepared").rglob("*")) if p.is_file())
    prepared.write_bytes(prepared.read_bytes() + b"\0")
    proc = dmae_check(clone, env)
    assert f"  modified: {prepared.relative_to(clone)}" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_on_another_vendor_that_vendors_reference_decides(pushed):
    ours = cpu_vendor()
    clone, env = clone_of_a_run_made_on(pushed, "check-other", "OtherVendor")
    proc = dmae_check(clone, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"The reference ran on an OtherVendor CPU, this machine has an {ours} one" in (
        proc.stdout)
    assert f"No reference of {ours} bytes is committed" in proc.stdout

    recorded = dmae_check(clone, env, "--record")
    reference = clone / "results" / NAME / "reference" / f"{ours}.json"
    assert recorded.returncode == 0 and reference.is_file(), recorded.stdout + recorded.stderr
    hashes = json.loads(reference.read_text())["md5"]
    stages = yaml.safe_load((clone / f"dvc/{NAME}/dvc.yaml").read_text())["stages"]
    assert len(hashes) > len(stages) and all(len(h) == 32 for h in hashes.values())
    proc = dmae_check(clone, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"every output has the hash the {ours} reference records" in proc.stdout

    checkpoint = a_checkpoint(clone)
    original = checkpoint.read_bytes()
    checkpoint.write_bytes(original + b"\0")
    proc = dmae_check(clone, env)
    assert proc.returncode == 1
    name = str(checkpoint.relative_to(clone))
    assert f"differs from the {ours} reference: {name}" in proc.stdout
    assert f"1 of {len(hashes)} outputs differ" in proc.stdout
    checkpoint.write_bytes(original)

    # A reference describes the run of one dvc.lock: another lock's outputs make it stale.
    data = json.loads(reference.read_text())
    data["dvc_lock_outputs"] = "0" * 16
    reference.write_text(json.dumps(data))
    proc = dmae_check(clone, env)
    assert proc.returncode == 1 and "was recorded for the outputs of another" in proc.stdout


@pytest.mark.slow
def test_a_config_without_committed_tables_is_refused_by_name(pushed):
    clone, env = clone_of_a_run_made_on(pushed, "check-none", cpu_vendor())
    proc = run([BIN / "dmae", "check", "--config", "config/imagenet.yaml"], cwd=clone, env=env,
               check=False)
    assert proc.returncode == 2
    assert "no tables of results/imagenet are committed" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_table_cell_beyond_its_interval_fails_the_check(pushed):
    clone, env = clone_of_a_run_made_on(pushed, "check-tables", cpu_vendor())
    table = clone / "results" / NAME / "tables" / "certified_accuracy.csv"
    header, first, *rest = table.read_text().splitlines()
    cells = first.split(",")
    column = header.split(",").index("r=0")
    cells[column] = "100.0" if cells[column] != "100.0" else "0.0"
    table.write_text("\n".join([header, ",".join(cells), *rest]) + "\n")
    proc = dmae_check(clone, env)
    assert proc.returncode == 1
    assert "beyond" in proc.stdout and "certified_accuracy" in proc.stdout
    # the bytes are checked too, so the moved cell comes with the file that moved
    assert f"  modified: {table.relative_to(clone)}" in proc.stdout, proc.stdout


# ------------------------------------------------------------- the committed references


def test_each_committed_reference_describes_the_committed_run():
    """A vendor's reference holds every output of the committed pipeline and was recorded
    for the outputs its dvc.lock records; a lock whose outputs changed needs it recorded
    again on that vendor's CPU (or removed: the check then says the tables are the check)."""
    for configfile in dvcstages.committed_pipelines(REPO):
        cfg = cfglib.load(REPO / configfile)
        dvc_yaml = dvcstages.dvc_file(configfile)
        outs = [p for stage in yaml.safe_load((REPO / dvc_yaml).read_text())["stages"].values()
                for p in dvcsync.outputs(stage)]
        for path in sorted((REPO / layout.results_dir(cfg) / "reference").glob("*.json")):
            reference = json.loads(path.read_text())
            assert path.stem == reference["cpu_vendor"]
            assert reference["dvc_lock_outputs"] == check.lock_outputs(REPO, dvc_yaml), path
            files = set(reference["md5"])
            assert all(dvcsync.inside(f, outs) for f in files), path
            assert all(any(dvcsync.inside(f, [out]) for f in files) for out in outs), path


def test_the_committed_lock_records_the_committed_code_digests():
    """dvc.lock's code params are workflow/code-identity.yaml's: otherwise `dvc status` on
    the committed run reports changed params, and its rerun is not the run the lock made."""
    rules = yaml.safe_load((REPO / code_identity.IDENTITY_FILE).read_text())["rules"]
    for configfile in dvcstages.committed_pipelines(REPO):
        dvc_yaml = dvcstages.dvc_file(configfile)
        stages = yaml.safe_load((REPO / dvc_yaml).read_text())["stages"]
        lock = yaml.safe_load((REPO / Path(dvc_yaml).with_suffix(".lock")).read_text())
        for name, stage in stages.items():
            recorded = lock["stages"][name]["params"][code_identity.IDENTITY_FILE]
            expected = {f"rules.{r}": rules[r] for r in dvcsync.parse_cmd(stage["cmd"])[2]}
            assert recorded == expected, f"{name}: re-record dvc.lock's code digests"


def test_the_committed_tables_and_figures_are_those_dvc_lock_records():
    """The outputs git keeps (tables, figures; `cache: false`) are the bytes the lock says
    the committed run wrote: a report redone without `dvc commit`, or a lock committed
    without its tables, fails here."""
    for configfile in dvcstages.committed_pipelines(REPO):
        dvc_yaml = dvcstages.dvc_file(configfile)
        lock = yaml.safe_load((REPO / Path(dvc_yaml).with_suffix(".lock")).read_text())
        kept = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.split()
        checked = 0
        for stage in lock["stages"].values():
            for out in stage.get("outs", []):
                if out["path"] in kept:
                    assert check.md5(REPO / out["path"]) == out["md5"], out["path"]
                    checked += 1
        cfg = cfglib.load(REPO / configfile)
        assert checked >= len(registry.table_paths(cfg)) + len(registry.figure_paths(cfg))


def test_a_seed_studys_seed_zero_runs_are_checked_against_the_base_runs_bytes(tmp_path):
    """The runs of config/fashion-mnist-seeds.yaml whose settings equal the default's (seed 0)
    are paired with them, the other seeds are not; a paired file must have the base run's
    bytes, except the training's JSON record, which names its run."""
    study = cfglib.load(REPO / "config" / "fashion-mnist-seeds.yaml")
    base = cfglib.load(REPO / "config" / "default.yaml")
    pairs = check.same_runs(study, base)
    assert {ours.parts[-2] if ours.name.startswith("sigma_") else ours.name
            for ours, _ in pairs} == {"rs_s0", "mae_s0", "dmae_s0"}
    assert len(pairs) == 2 + 3 * 2 * 2  # two pretrainings; 3 recipes x 2 sigmas x 2 folders
    ours = layout.finetune_dir(study, "vit_s", "dmae_s0", "0.5")
    theirs = layout.finetune_dir(base, "vit_s", "dmae", "0.5")
    expected = {}
    for name, content in (("best.safetensors", b"weights"), ("metrics.csv", b"epoch\n1\n"),
                          ("best.json", b'{"method": "dmae_s0"}')):
        (tmp_path / ours).mkdir(parents=True, exist_ok=True)
        (tmp_path / ours / name).write_bytes(content)
        expected[dvcstages.posix(theirs / name)] = check.md5(tmp_path / ours / name)
    expected[dvcstages.posix(theirs / "best.json")] = "0" * 32  # the base run's own name
    assert check.seed_zero_differences(tmp_path, study, base, expected) == (2, [])
    (tmp_path / ours / "metrics.csv").write_bytes(b"epoch\n2\n")
    assert check.seed_zero_differences(tmp_path, study, base, expected) == (
        1, [dvcstages.posix(ours / "metrics.csv")])
