"""The Snakemake workflow, driven by the real snakemake in scratch working directories.

One smoke run of the whole chain (data -> pretraining -> fine-tuning -> certification shards
-> merge -> report) is shared by the tests below; the rerun tests are dry runs against it.
Every test that needs that run is marked slow (`make test-fast` leaves them out).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import BIN, DEBIAN_FMNIST, REPO, planned_jobs
from dvc_repos import copy_checkout
from workflow_runs import run_outputs, smoke_cfg, snakemake, write_config

from dmae import config as cfglib
from dmae import layout, pipeline
from dmae.data import load_split
from dmae.report import registry

needs_fmnist = pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(),
                                  reason="Debian's dataset-fashion-mnist is not installed")


def test_dry_run_lists_the_whole_chain(tmp_path):
    jobs = planned_jobs(snakemake(tmp_path, write_config(tmp_path / "s.yaml", smoke_cfg()), "-n"))
    cfg = smoke_cfg()
    runs = len(cfg["models"]) * len(cfg["methods"]) * len(cfg["sigmas"])
    assert jobs == {"prepare_data": 1, "pretrain": 1, "reconstructions": 1, "finetune": runs,
                    "certify_shard": runs * cfg["certify"]["shards"], "merge_certify": runs,
                    "report": 1, "default": 1}


def test_bad_config_fails_before_any_job(tmp_path):
    cfg = smoke_cfg()
    cfg["certify"]["alpah"] = 0.01
    proc = snakemake(tmp_path, write_config(tmp_path / "bad.yaml", cfg), "--cores", "1",
                     check=False)
    assert proc.returncode != 0
    assert "certify.alpah" in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists(), "no job may run on a bad config"


@needs_fmnist
@pytest.mark.slow
def test_smoke_run_produces_every_table_and_figure(smoke_run):
    workdir, _, cfg = smoke_run
    recons = [layout.reconstruction_figure(cfg, m, p) for m, p in layout.used_pretrainings(cfg)]
    expected = [*registry.table_paths(cfg), *registry.figure_paths(cfg), *recons]
    for path in expected:
        assert (workdir / path).stat().st_size > 0, path
    certified = len(range(cfg["certify"].get("start", 0), 10_000, cfg["certify"]["stride"]))
    for run in layout.runs(cfg):
        rows = (workdir / layout.certify_tsv(cfg, *run)).read_text().splitlines()
        assert rows[0].split("\t")[:5] == ["idx", "label", "predict", "radius", "correct"]
        assert len(rows) == 1 + certified
    logs = workdir / layout.results_dir(cfg) / "logs"
    assert (logs / "report.log").is_file() and (logs / "pretrain" / "micro_dmae.log").is_file()


@needs_fmnist
@pytest.mark.slow
def test_the_report_lists_methods_in_the_config_files_order(smoke_run):
    """As `dmae report` run by hand on the file does (the jobs read the effective config)."""
    workdir, _, cfg = smoke_run
    table = pd.read_csv(workdir / layout.results_dir(cfg) / "tables" / "certified_accuracy.csv")
    assert list(dict.fromkeys(table["method"])) == list(smoke_cfg()["methods"]) == ["rs", "dmae"]


@needs_fmnist
@pytest.mark.slow
def test_the_table_cells_are_what_the_certifications_say(smoke_run):
    """Each cell recomputed by hand from the run's TSVs: the images, those correct, the share
    certified correct at a radius of at least r, and the mean of radius times correct; and the
    run certified something (a table of zeros would pass every other check)."""
    workdir, _, cfg = smoke_run
    table = pd.read_csv(workdir / layout.results_dir(cfg) / "tables" / "certified_accuracy.csv")
    certified = 0
    for model, method, sigma in layout.runs(cfg):
        rows = pd.read_csv(workdir / layout.certify_tsv(cfg, model, method, sigma), sep="\t")
        correct = rows["correct"] == 1
        row = table[(table["method"] == method) & (table["sigma"] == float(sigma))]
        assert len(row) == 1, (method, sigma)
        assert row["images"].item() == len(rows) and row["correct"].item() == correct.sum()
        for radius in cfg["report"]["radii"]:
            share = 100 * (correct & (rows["radius"] >= radius)).mean()
            assert row[f"r={radius:g}"].item() == pytest.approx(share, abs=0.05), radius
        acr = (rows["radius"] * correct).mean()
        assert row["ACR"].item() == pytest.approx(acr, abs=1e-6)
        certified += int((correct & (rows["radius"] > 0)).sum())
    assert certified > 0


@needs_fmnist
@pytest.mark.slow
def test_snakemake_report_bundles_figures_and_tables(smoke_run, tmp_path):
    workdir, path, _ = smoke_run
    snakemake(workdir, path, "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "best_over_sigma.png" in html and "certified_accuracy.csv" in html
    assert "reconstructions_micro-dmae.png" in html


@needs_fmnist
@pytest.mark.slow
def test_finished_run_has_nothing_to_do(smoke_run):
    workdir, path, _ = smoke_run
    assert planned_jobs(snakemake(workdir, path, "-n")) == {}


@needs_fmnist
@pytest.mark.slow
def test_changing_one_sigma_reruns_only_its_chain(smoke_run, tmp_path):
    workdir, _, cfg = smoke_run
    changed = smoke_cfg()
    changed["finetune_per_sigma"] = {"0.5": {"epochs": 2}}
    jobs = planned_jobs(snakemake(workdir, write_config(tmp_path / "c.yaml", changed), "-n"))
    methods = len(cfg["methods"])
    assert jobs == {"finetune": methods, "certify_shard": methods * cfg["certify"]["shards"],
                    "merge_certify": methods, "report": 1, "default": 1}


@needs_fmnist
@pytest.mark.slow
def test_dry_run_leaves_the_running_config_alone(smoke_run, tmp_path):
    """Jobs read results/<name>/config.yaml: a dry run of an edited config must not rewrite
    it under a run that is still going."""
    workdir, _, cfg = smoke_run
    effective = workdir / layout.results_dir(cfg) / "config.yaml"
    before = effective.read_text()
    changed = smoke_cfg()
    changed["certify"]["n"] = 70
    snakemake(workdir, write_config(tmp_path / "c.yaml", changed), "-n")
    assert effective.read_text() == before


@needs_fmnist
@pytest.mark.slow
def test_changing_n_reruns_certification_and_report_only(smoke_run, tmp_path):
    workdir, _, cfg = smoke_run
    changed = smoke_cfg()
    changed["certify"]["n"] = 60
    jobs = planned_jobs(snakemake(workdir, write_config(tmp_path / "c.yaml", changed), "-n"))
    runs = len(layout.runs(cfg))
    assert jobs == {"certify_shard": runs * cfg["certify"]["shards"], "merge_certify": runs,
                    "report": 1, "default": 1}


@pytest.mark.slow
def test_adaptive_certification_reuses_the_classifiers_and_keeps_cohen_beside_it(smoke_run,
                                                                                  tmp_path):
    source, _, cfg = smoke_run
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir, symlinks=True)
    adaptive = smoke_cfg()
    adaptive["certify"]["method"] = "adaptive"
    adaptive["sigmas"] = adaptive["sigmas"][:1]  # one sigma shows it; each run is ~8 s of jobs
    path = write_config(tmp_path / "adaptive.yaml", adaptive)
    adaptive_cfg = cfglib.load(path)
    runs = len(layout.runs(adaptive_cfg))
    assert planned_jobs(snakemake(workdir, path, "-n")) == {
        "certify_shard": runs * cfg["certify"]["shards"], "merge_certify": runs,
        "report": 1, "default": 1}
    cohen = {p: p.read_bytes() for p in (workdir / layout.certify_dir(cfg)).rglob("*.tsv")}
    snakemake(workdir, path, "--cores", "4")  # 2-thread jobs: two overlap their start-ups

    assert {p: p.read_bytes() for p in (workdir / layout.certify_dir(cfg)).rglob("*.tsv")} \
        == cohen
    for model, method, sigma in layout.runs(adaptive_cfg):
        df = pd.read_csv(workdir / layout.certify_tsv(adaptive_cfg, model, method, sigma),
                         sep="\t")
        assert (df["n_used"] <= cfg["certify"]["n"]).all()
    summary = (workdir / layout.results_dir(cfg) / "tables" / "summary.md").read_text()
    assert "- certification: adaptive (" in summary
    # back to cohen: its certifications are still there, only the report is redone
    assert planned_jobs(snakemake(workdir, smoke_run[1], "-n")) == {"report": 1, "default": 1}


@needs_fmnist
@pytest.mark.slow
def test_validation_split_certifies_validation_images(smoke_run, tmp_path):
    """certify.split: val (studies that choose settings) reruns certification only, and the
    rows it writes are validation images with their validation labels."""
    workdir, _, cfg = smoke_run
    changed = smoke_cfg()
    changed["certify"].update(split="val", stride=1000)
    path = write_config(tmp_path / "val.yaml", changed)
    runs = len(layout.runs(cfg))
    assert planned_jobs(snakemake(workdir, path, "-n")) == {
        "certify_shard": runs * cfg["certify"]["shards"], "merge_certify": runs,
        "report": 1, "default": 1}

    model, method, sigma = layout.runs(cfg)[0]
    checkpoint = layout.finetune_dir(cfg, model, method, sigma) / "best.safetensors"
    out = tmp_path / "val.tsv"
    subprocess.run([str(BIN / "dmae"), "certify", "--config", str(path), "--checkpoint",
                    str(checkpoint), "--sigma", sigma, "--out", str(out), "--threads", "1"],
                   cwd=workdir, check=True, capture_output=True)
    val = load_split(workdir / layout.prepared_dir(cfg), "val")
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == list(range(0, len(val), 1000))
    assert [int(r[1]) for r in rows] == [int(val.targets[int(r[0])]) for r in rows]


@needs_fmnist
@pytest.mark.slow
def test_a_failed_job_shows_its_cause_in_its_log(smoke_run, tmp_path):
    """A job's stderr lands in its log, so `--show-failed-logs` shows why it failed: here a
    training that diverges, reported in one line."""
    workdir, smoke_path, _ = smoke_run
    cfg = smoke_cfg()
    cfg["name"] = "smoke-diverged"
    cfg["finetune"].update(lr=1.0e+30, max_steps=3)
    path = write_config(tmp_path / "diverged.yaml", cfg)
    target = layout.finetune_dir(cfg, "micro", "rs", "0.25") / "best.safetensors"
    # The target after an option: --configfile takes every value up to the next one.
    proc = snakemake(workdir, path, "--cores", "1", "--show-failed-logs", str(target),
                     check=False)
    assert proc.returncode != 0
    log = workdir / layout.results_dir(cfg) / "logs" / "finetune" / "micro_rs_sigma_0.25.log"
    assert "ERROR dmae: training diverged" in log.read_text()
    assert "training diverged" in proc.stdout + proc.stderr
    # The prepared data both configs share did not become stale for the first one.
    assert planned_jobs(snakemake(workdir, smoke_path, "-n")) == {}


@pytest.fixture
def library_copy(tmp_path) -> Path:
    """A copy of this checkout to edit: the tests never write into the one they run from."""
    copy = tmp_path / "checkout"
    copy_checkout(copy)
    return copy


@needs_fmnist
@pytest.mark.slow
def test_a_comment_and_a_docstring_in_every_library_file_rerun_nothing(smoke_run,
                                                                       library_copy):
    workdir, path, _ = smoke_run
    for source in sorted((library_copy / "src" / "dmae").rglob("*.py")):
        text = source.read_text()
        doc = '"""Edited by a test."""\n' if not text.lstrip().startswith('"""') else ""
        source.write_text(doc + text.replace('"""', '"""Edited. ', 1) + "\n# a comment\n")
    assert planned_jobs(snakemake(workdir, path, "-n", checkout=library_copy)) == {}


@needs_fmnist
@pytest.mark.slow
@pytest.mark.parametrize("module, old, new, rules", [
    # the model code: everything that builds or runs a model, not the data preparation
    ("models/common.py", "IMAGENET_STD = (0.229, 0.224, 0.225)",
     "IMAGENET_STD = (0.229, 0.224, 0.226)",
     {"pretrain", "reconstructions", "finetune", "certify_shard", "merge_certify", "report"}),
    # the report's reference data: the report only
    ("report/reference.py", "REFERENCE_RESULTS = ", "REFERENCE_RESULTS = REFERENCE_RESULTS_ = ",
     {"report"}),
    # the certification loop: the certifications and what follows, not the training
    ("certify/run.py", "def normalize_shard(", "UNUSED = 1\n\n\ndef normalize_shard(",
     {"certify_shard", "merge_certify", "report"}),
])
def test_a_code_change_reruns_exactly_the_rules_that_run_it(smoke_run, library_copy, module,
                                                            old, new, rules):
    workdir, path, cfg = smoke_run
    source = library_copy / "src" / "dmae" / module
    text = source.read_text()
    assert old in text
    source.write_text(text.replace(old, new, 1))
    jobs = planned_jobs(snakemake(workdir, path, "-n", checkout=library_copy))
    assert set(jobs) == rules | {"default"}, jobs
    runs = len(layout.runs(cfg))
    assert jobs.get("certify_shard", 0) in (0, runs * cfg["certify"]["shards"])


@needs_fmnist
@pytest.mark.slow
def test_config_overrides_are_typed_and_go_on_top_of_the_config_file(smoke_run):
    """`--config 'certify={n: 60}'` as Snakemake users write it: 60 is a number, as in a
    config file, and only what reads certify.n reruns."""
    workdir, path, cfg = smoke_run
    jobs = planned_jobs(snakemake(workdir, path, "-n", "--config", "certify={n: 60}"))
    runs = len(layout.runs(cfg))
    assert jobs == {"certify_shard": runs * cfg["certify"]["shards"], "merge_certify": runs,
                    "report": 1, "default": 1}
    nested = planned_jobs(snakemake(workdir, path, "-n", "--config",
                                    "finetune_per_sigma={0.5: {epochs: 2}}"))
    assert nested.get("finetune") == len(cfg["methods"]) and "pretrain" not in nested, nested


def test_make_reproduce_in_a_fresh_clone_computes_what_its_committed_tables_came_from(
        library_copy):
    """A clone holds the committed tables without the checkpoints and certifications they
    came from: to Snakemake those tables are up to date, and nothing would run; make
    reproduce remakes the report (--forcerun report), so the whole chain runs."""
    config = library_copy / "config" / "smoke.yaml"
    cfg = cfglib.load(config)
    assert all((library_copy / p).is_file() for p in registry.table_paths(cfg))
    assert planned_jobs(snakemake(library_copy, config, "-n", checkout=library_copy)) == {}
    # The Makefile's own first command, dry
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    env["PYTHONPATH"] = str(library_copy / "src")  # (make test runs the tests inside make)
    recipe = subprocess.run(["make", "-n", "--no-print-directory", "-o", "venv", "reproduce",
                             f"VENV={BIN.parent}", "CONFIG=config/smoke.yaml"],
                            cwd=library_copy, env=env, capture_output=True, text=True,
                            check=True).stdout
    command = shlex.split(recipe.split("\n\n")[0].split("\n/")[0].replace("\\\n", " "))
    assert Path(command[0]).name == "snakemake" and "--forcerun" in command, command
    proc = subprocess.run([*command, "-n"], cwd=library_copy, env=env, capture_output=True,
                          text=True, check=True)
    assert planned_jobs(proc) == planned_jobs(snakemake(library_copy, config, "-n",
                                                        "--forceall", checkout=library_copy))


def test_without_a_config_file_overrides_go_on_top_of_the_default(tmp_path):
    default = cfglib.load(REPO / "config" / "default.yaml")
    full = planned_jobs(snakemake(tmp_path, None, "-n"))
    assert full["finetune"] == len(layout.runs(default))
    changed = planned_jobs(snakemake(tmp_path, None, "-n", "--config", "certify={n: 500}",
                                     "sigmas=[0.5, 1.0]"))
    assert changed["finetune"] == len(default["models"]) * len(default["methods"]) * 2
    assert changed["certify_shard"] == changed["finetune"] * default["certify"]["shards"]
    bad = snakemake(tmp_path, None, "-n", "--config", "certify={n: many}", check=False)
    assert bad.returncode != 0 and "certify.n: 'many' is not of type 'integer'" in (
        bad.stdout + bad.stderr)


@pytest.mark.parametrize("name, expected", [
    # DMAE on ViT-B and ViT-L; on ViT-B also MAE pretraining, both probed, MAE fine-tuned and
    # DMAE with cross-entropy only: 6 (model, method) pairs x 3 sigmas, 10 shards each
    ("imagenet", {"prepare_data": 1, "pretrain": 3, "reconstructions": 3, "finetune": 18,
                  "certify_shard": 180, "merge_certify": 18, "report": 1, "default": 1}),
    # ViT-B from ImageNet, with and without continued pretraining; 20 shards each
    ("cifar10", {"prepare_data": 1, "pretrain": 2, "reconstructions": 2, "finetune": 6,
                 "certify_shard": 120, "merge_certify": 6, "report": 1, "default": 1}),
    ("default", None),
    ("fashion-mnist-sigma1-study", None),
])
def test_paper_configs_show_the_full_dag(tmp_path, name, expected):
    cfg = cfglib.load(REPO / "config" / f"{name}.yaml")
    for recipe in cfg["pretrainings"].values():  # the ImageNet checkpoint CIFAR-10 starts from
        if recipe["init"]:
            (tmp_path / recipe["init"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / recipe["init"]).touch()
    jobs = planned_jobs(snakemake(tmp_path, REPO / "config" / f"{name}.yaml", "-n"))
    if expected is None:  # every method x sigma, one pretraining per recipe used
        runs = len(layout.runs(cfg))
        pres = len(layout.used_pretrainings(cfg))
        expected = {"prepare_data": 1, "pretrain": pres, "reconstructions": pres,
                    "finetune": runs, "certify_shard": runs * cfg["certify"]["shards"],
                    "merge_certify": runs, "report": 1, "default": 1}
    assert jobs == expected


@pytest.mark.parametrize("name", ["imagenet", "cifar10"])
def test_every_job_asks_for_its_resource_group(tmp_path, name):
    """Each rule's jobs ask the scheduler for the resources.<group> dmae.pipeline names (the
    paper configs set every group, so a job with another group's figures is caught), and a
    pretraining that only takes its init as it is (CIFAR-10's) is a light job of one
    process, not an 8-GPU training."""
    cfg = cfglib.load(REPO / "config" / f"{name}.yaml")
    for recipe in cfg["pretrainings"].values():  # the ImageNet checkpoint CIFAR-10 starts from
        if recipe["init"]:
            (tmp_path / recipe["init"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / recipe["init"]).touch()
    # Enough cores that Snakemake does not scale any job's threads down.
    proc = snakemake(tmp_path, REPO / "config" / f"{name}.yaml", "-n", "-p", "--cores", "128")
    seen, light = set(), []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", proc.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if not rule or rule[1] not in pipeline.RULES:
            continue
        wildcards = re.search(r"^    wildcards: (.*)$", block, re.M)
        job = dict(re.findall(r"(\w+)=([^,\s]+)", wildcards[1])) if wildcards else {}
        asked = pipeline.resources(cfg, rule[1], **job)
        threads = re.search(r"^    threads: (\d+)$", block, re.M)
        resources = dict(re.findall(r"(\w+)=(\w+)", re.search(r"^    resources: (.*)$", block,
                                                              re.M)[1]))
        assert (int(threads[1]) if threads else 1) == asked["threads"], rule[1]  # 1: no line
        assert (int(resources["mem_mb"]), int(resources["runtime"]), int(resources["gpu"])) == (
            asked["mem_mb"], asked["runtime"], asked["gpus"]), rule[1]
        assert resources["nodes"] == "1", rule[1]  # torchrun --standalone: one node
        if rule[1] == "pretrain" and not cfg["pretrainings"][job["pretraining"]]["train"]:
            assert asked["gpus"] == 0 and asked == {**cfg["resources"]["report"], "gpus": 0,
                                                    "processes": 1}
            assert "torchrun" not in block and "dmae pretrain" in block
            light.append(job["pretraining"])
        elif rule[1] in ("pretrain", "finetune"):
            assert asked["gpus"] == 8 and "torchrun --standalone --nproc_per_node=8" in block
        seen.add(rule[1])
    assert seen == set(pipeline.RULES)
    assert sorted(light) == sorted(pre for _, pre in layout.used_pretrainings(cfg)
                                   if not cfg["pretrainings"][pre]["train"])


def test_a_training_runs_one_process_per_gpu_the_command_line_gives(tmp_path):
    """--set-resources finetune:gpu=4 starts four processes, not the config's eight (nor one
    process on four GPUs); the other rules keep the config's."""
    target = layout.finetuned(cfglib.load(REPO / "config" / "imagenet.yaml"), "vit_b", "dmae",
                              0.5)
    proc = snakemake(tmp_path, REPO / "config" / "imagenet.yaml", "-n", "-p", "--cores", "128",
                     str(target), "--set-resources", "finetune:gpu=4")
    blocks = {re.match(r"(?:local)?rule (\w+):", b)[1]: b
              for b in re.split(r"\n(?=(?:local)?rule \w+:\n)", proc.stdout)
              if re.match(r"(?:local)?rule \w+:", b)}
    assert "torchrun --standalone --nproc_per_node=4 -m dmae.cli finetune" in blocks["finetune"]
    assert "torchrun --standalone --nproc_per_node=8 -m dmae.cli pretrain" in blocks["pretrain"]


@needs_fmnist
@pytest.mark.slow
def test_rerun_is_byte_identical_and_compare_flags_a_changed_tsv(smoke_run, smoke_rerun,
                                                                 tmp_path):
    """The session's second smoke run (workflow_runs.smoke_rerun: through SLURM where the
    session runs the SLURM tests) wrote the first one's bytes."""
    workdir, _, cfg = smoke_run
    again = tmp_path / "again"
    shutil.copytree(smoke_rerun.workdir, again, symlinks=True)  # changed below
    first, second = run_outputs(workdir, cfg), run_outputs(again, cfg)
    assert any(name.endswith(".safetensors") for name in first)
    assert sorted(first) == sorted(second)
    differ = [name for name in first if first[name] != second[name]]
    assert not differ, f"a rerun wrote other bytes: {differ}"

    def compare(a: Path, b: Path):
        return subprocess.run([str(BIN / "dmae"), "compare", str(a), str(b), "--show", "all"],
                              capture_output=True, text=True)

    a, b = (d / layout.results_dir(cfg) for d in (workdir, again))
    same = compare(a, b)
    assert same.returncode == 0, same.stdout + same.stderr
    assert re.search(r"(\d+) cells: \1 identical", same.stdout), same.stdout

    # a deliberately changed certification: every image certified correct at radius 1
    tsv = again / layout.certify_tsv(cfg, *layout.runs(cfg)[0])
    header, *rows = tsv.read_text().splitlines()
    changed = []
    for row in rows:
        f = row.split("\t")
        f[2], f[3], f[4] = f[1], "1.0", "1"  # predict = label, radius, correct
        changed.append("\t".join(f))
    tsv.write_text("\n".join([header, *changed]) + "\n")
    snakemake(again, write_config(tmp_path / "smoke.yaml", smoke_cfg()), "--cores", "1",
              "--allowed-rules", "report")
    flagged = compare(a, b)
    assert flagged.returncode == 1, flagged.stdout + flagged.stderr
    assert "beyond" in flagged.stdout and "certified_accuracy" in flagged.stdout
