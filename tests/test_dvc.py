"""DVC: dvc.yaml is generated from the config and follows the Snakemake DAG; pushed outputs
pulled into a fresh clone with a plain `dvc pull` leave Snakemake nothing to do; and the two
tools call the same stages stale after an edit (real dvc, git, make and snakemake)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, planned_jobs
from dvc_repos import (
    CONFIG,
    DVC_FILE,
    copy_checkout,
    dry_run,
    make_pull,
    out_files,
    pushed_repository,
    run,
    tiny_config,
    tool_env,
)

from dmae import code_identity, pipeline
from dmae import config as cfglib
from dmae.ops.dvc import stages as dvcstages
from dmae.ops.dvc import sync as dvcsync
from dmae.ops.dvc.cli import main as dvc_command

DEFAULT = "config/default.yaml"


# ----------------------------------------------------------------------- the generated file


def written(configfile: str) -> dict:
    """A config file's own keys (DVC params name only those)."""
    return yaml.safe_load((REPO / configfile).read_text())


@pytest.mark.parametrize("configfile", dvcstages.committed_pipelines(REPO))
def test_committed_dvc_yaml_is_the_generated_one(configfile):
    expected = dvcstages.render(cfglib.load(REPO / configfile), configfile, written(configfile))
    committed = REPO / dvcstages.dvc_file(configfile)
    assert committed.is_file() and committed.read_text() == expected, (
        f"{committed.relative_to(REPO)} is stale: run `python -m dmae.ops.dvc --all`")


def test_a_plain_dvc_pull_meets_no_pipeline_that_never_ran():
    """A committed dvc.yaml without its dvc.lock makes `dvc pull` warn about every output of
    it ("No file hash info found", hundreds of lines): such a file waits for its first run."""
    for configfile in dvcstages.committed_pipelines(REPO):
        lock = REPO / Path(dvcstages.dvc_file(configfile)).with_suffix(".lock")
        assert lock.is_file(), f"{lock.relative_to(REPO)}: a pipeline without its lock"


def test_every_pipeline_is_one_dvc_graph(tmp_path):
    """DVC reads every dvc.yaml of the repository as one graph: no output may have two owners
    (which fails every dvc command), and CIFAR-10's continued pretraining depends on the
    ImageNet stage that writes its starting checkpoint. Checked in a copy of the checkout
    with every pipeline written, as they are once they have run."""
    copy_checkout(tmp_path)
    run(["git", "init", "-q"], cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    for configfile in dvcstages.PIPELINES:
        run([BIN / "python", "-m", "dmae.ops.dvc", "--config", configfile], cwd=tmp_path,
            env=env)
    assert dvcstages.dvc_file(DEFAULT) == "dvc.yaml"
    assert [dvcstages.dvc_file(c) for c in dvcstages.PIPELINES[1:]] == [
        "dvc/cifar10/dvc.yaml", "dvc/imagenet/dvc.yaml"]
    stage_list = run([BIN / "dvc", "stage", "list", "--all", "--name-only"], cwd=tmp_path).stdout
    names = set(stage_list.split())
    assert "prepare" in names and "dvc/cifar10/dvc.yaml:prepare" in names
    assert "dvc/imagenet/dvc.yaml:pretrain-vit_b-dmae" in names
    dag = run([BIN / "dvc", "dag", "--md", "dvc/cifar10/dvc.yaml:pretrain-vit_b-in1k"],
              cwd=tmp_path).stdout
    assert "dvc/imagenet/dvc.yaml:pretrain-vit_b-dmae" in dag
    # A stage of a dvc.yaml in dvc/<name>/ runs from the repository, as the top-level ones.
    stages = yaml.safe_load((tmp_path / "dvc/cifar10/dvc.yaml").read_text())["stages"]
    assert {s["wdir"] for s in stages.values()} == {"../.."}
    assert dvcstages.committed_pipelines(tmp_path) == list(dvcstages.PIPELINES)


def test_check_mode_fails_on_a_stale_file_and_write_mode_fixes_it(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "dvc.yaml"
    out.write_text("stages: {}\n")
    assert dvc_command(["--config", DEFAULT, "--output", str(out), "--check"]) == 1
    assert "+stages:" in capsys.readouterr().out  # a diff
    assert dvc_command(["--config", DEFAULT, "--output", str(out)]) == 0
    assert dvc_command(["--config", DEFAULT, "--output", str(out), "--check"]) == 0
    assert out.read_text() == (REPO / "dvc.yaml").read_text()
    capsys.readouterr()
    assert dvc_command(["--all", "--check"]) == 0
    # the code digests, and each committed pipeline
    assert capsys.readouterr().out.count("is up to date") == 1 + len(
        dvcstages.committed_pipelines(REPO))
    assert dvc_command(["--config", "config/imagenet.yaml", "--path"]) == 0
    assert capsys.readouterr().out == "dvc/imagenet/dvc.yaml\n"


def test_each_stage_tracks_the_code_digests_of_its_rules_and_no_source_file():
    """A stage depends on what its rules compute with through their digests (params of
    workflow/code-identity.yaml, as Snakemake's jobs do), not on the bytes of source files,
    which a comment changes."""
    stages = dvcstages.dvc_stages(cfglib.load(REPO / DEFAULT), DEFAULT, written(DEFAULT))
    for name, stage in stages.items():
        rules = dvcsync.parse_cmd(stage["cmd"])[2]
        assert stage["params"][1] == {code_identity.IDENTITY_FILE: [f"rules.{r}" for r in rules]}
        assert not [d for d in stage.get("deps", [])
                    if d.startswith(("src/", "workflow/")) or d == "Snakefile"], name


def test_an_adaptive_certification_tracks_the_report_grid_it_settles():
    """certify.radii null means report.radii (dmae.config fills it in): the certification
    stages then depend on report.radii, and only then."""
    written = yaml.safe_load((REPO / "config" / "default.yaml").read_text())

    def certify_params(certify: dict) -> dict[str, list]:
        text = copy.deepcopy(written)
        text["certify"].update(certify)
        stages = dvcstages.dvc_stages(cfglib.validate(copy.deepcopy(text)),
                                      "config/default.yaml", text)
        return {name: stage["params"][0]["config/default.yaml"]
                for name, stage in stages.items() if name.startswith("certify")}

    for params in certify_params({"method": "adaptive"}).values():
        assert "report.radii" in params and "certify" in params
    for certify in ({"method": "adaptive", "radii": [0.0, 0.5]}, {}):
        for params in certify_params(certify).values():
            assert "report.radii" not in params


def test_another_methods_settings_leave_a_certification_alone_for_both_tools():
    """A cohen config that writes an adaptive setting (or whose adaptive defaults change)
    certifies as before: Snakemake's settings of the job and DVC's params leave it out."""
    written = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    assert written["certify"].get("method", "cohen") == "cohen"
    switched = copy.deepcopy(written)
    switched["certify"]["first_look"] = 20  # an adaptive setting

    def both(text: dict) -> tuple[dict, dict]:
        cfg = cfglib.validate(copy.deepcopy(text))
        stages = dvcstages.dvc_stages(cfg, DEFAULT, text)
        return (pipeline.settings(cfg, "certify_shard"),
                {name: stage["params"][0][DEFAULT] for name, stage in stages.items()
                 if name.startswith("certify")})

    (snakemake_before, dvc_before), (snakemake_after, dvc_after) = both(written), both(switched)
    assert "first_look" not in snakemake_before["certify"]
    assert snakemake_after == snakemake_before
    assert all("certify" in params for params in dvc_before.values())
    for params in dvc_after.values():  # the section by the keys it uses
        assert "certify" not in params and "certify.first_look" not in params
        assert {"certify.n", "certify.n0", "certify.alpha"} <= set(params)


def test_stage_names_are_valid_and_every_output_has_one_owner():
    stages = dvcstages.dvc_stages(cfglib.load(REPO / DEFAULT), DEFAULT, written(DEFAULT))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", name) for name in stages)
    owners: dict[str, str] = {}
    for name, stage in stages.items():
        for path in dvcsync.outputs(stage):
            assert path not in owners, f"{path} is an output of {owners.get(path)} and {name}"
            owners[path] = name
    # Small results live in git (cache: false); everything else is cached for push/pull.
    for name, stage in stages.items():
        for entry in stage.get("outs", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            cached = not isinstance(entry, dict)
            assert cached == ("/tables/" not in path and "/figures/" not in path), (name, path)
        for entry in stage.get("plots", []):
            assert entry[next(iter(entry))] == {"cache": False}


@pytest.mark.parametrize("configfile", sorted(str(p.relative_to(REPO))
                                              for p in (REPO / "config").glob("*.yaml")))
def test_stages_follow_the_snakemake_dag(tmp_path, configfile):
    """Every job of the config's DAG belongs to exactly one stage, which runs its rule and
    declares all its outputs and inputs (data, upstream checkpoints)."""
    cfg = cfglib.load(REPO / configfile)
    for recipe in cfg["pretrainings"].values():
        if recipe.get("init"):  # a checkpoint from another config (CIFAR-10 from ImageNet)
            (tmp_path / recipe["init"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / recipe["init"]).touch()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "PYTHONPATH": str(REPO / "src")}
    proc = run([BIN / "snakemake", "-s", REPO / "Snakefile", "-d", tmp_path, "-n",
                "--configfile", REPO / configfile], cwd=tmp_path, env=env)
    jobs, job = [], None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            job = {"rule": m[1], "input": [], "output": []}
            jobs.append(job)
        elif job and (m := re.match(r"^    (input|output): (.*)$", line)):
            job[m[1]] = m[2].split(", ")
    jobs = [j for j in jobs if j["rule"] not in ("default", "all")]
    assert {j["rule"] for j in jobs} >= {"prepare_data", "pretrain", "finetune",
                                        "certify_shard", "merge_certify", "report"}

    stages = dvcstages.dvc_stages(cfg, configfile, written(configfile))
    outs = {n: dvcsync.entry_paths(s.get("outs")) + dvcsync.entry_paths(s.get("plots"))
            + dvcsync.entry_paths(s.get("metrics"))
            for n, s in stages.items()}
    produced = {p for j in jobs for p in j["output"]}
    used_by_stage: dict[str, set[str]] = {n: set() for n in stages}
    for j in jobs:
        owner = [n for n in stages if dvcsync.inside(j["output"][0], outs[n])]
        assert len(owner) == 1, f"{j['rule']} {j['output'][0]}: stages {owner}"
        name = owner[0]
        used_by_stage[name].add(j["rule"])
        assert all(dvcsync.inside(o, outs[name]) for o in j["output"]), (name, j["output"])
        cmd = stages[name]["cmd"]
        assert j["rule"] in cmd.split("--allowed-rules", 1)[1].split(), (name, j["rule"])
        for path in j["input"]:
            own = path in produced and dvcsync.inside(path, outs[name])
            assert own or dvcsync.inside(path, stages[name]["deps"]), (
                f"stage {name} lacks the dependency {path} of rule {j['rule']}")
    for name, stage in stages.items():
        rules = stage["cmd"].split("--allowed-rules", 1)[1].split()
        assert set(rules) == used_by_stage[name], (name, rules, used_by_stage[name])
        targets, stage_config, _ = dvcsync.parse_cmd(stage["cmd"])
        assert stage_config == configfile
        assert all(t in rules or t in produced for t in targets), (name, targets)
        for path in outs[name]:  # nothing declared that the workflow does not make
            base = path.removesuffix(".meta.json")
            assert any(dvcsync.inside(p, [path]) for p in produced) or base in produced, path


def test_up_to_date_stages_need_up_to_date_upstream_stages():
    raw = tiny_config()
    raw["methods"]["rs"] = {"pretraining": None, "consistency": False}
    stages = dvcstages.dvc_stages(cfglib.validate(copy.deepcopy(raw)), CONFIG, raw)
    graph = dvcsync.stage_graph(stages)
    pre, ft_dmae, ft_rs = ("pretrain-micro-dmae", "finetune-micro-dmae-sigma_0_25",
                           "finetune-micro-rs-sigma_0_25")
    assert graph["prepare"] == set()
    assert graph[pre] == {"prepare"}
    assert graph[ft_dmae] == {"prepare", pre}
    assert graph[ft_rs] == {"prepare"}
    assert graph["certify-micro-rs-sigma_0_25"] == {"prepare", ft_rs}
    assert graph["report"] == {n for n in stages if n.startswith(("certify-", "finetune-"))}
    assert dvcsync.up_to_date_stages(stages, changed=set()) == list(stages)
    fresh = dvcsync.up_to_date_stages(stages, changed={pre})
    # Everything downstream of the changed stage is out, whatever DVC says of it.
    assert set(fresh) == {"prepare", ft_rs, "certify-micro-rs-sigma_0_25"}


# --------------------------------------------------------------------------- the round trip


@pytest.fixture(scope="session")
def pushed(tmp_path_factory):
    return pushed_repository(tmp_path_factory)  # one build for test_dvc{,_remote}.py


def clone_and_pull(pushed, name: str) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """A fresh clone of the pushed repository, then a plain `dvc pull` (as a user types it)."""
    root, home, origin = pushed
    clone = root / name
    run(["git", "clone", "-q", origin, clone], cwd=root)
    env = tool_env(home, clone)
    return clone, env, run([BIN / "dvc", "pull"], cwd=clone, env=env)


def dvc_status(clone: Path, env: dict) -> set[str]:
    """The stages `dvc status` reports, by name."""
    out = run([BIN / "dvc", "status", "--json", DVC_FILE], cwd=clone, env=env).stdout
    return {key.rpartition(":")[2] for key in json.loads(out or "{}")}


def rerun_by_dvc(clone: Path, stale: set[str]) -> set[str]:
    """What `dvc repro` reruns when ``stale`` are: them, and the stages downstream of them
    (whose inputs those rewrite); `dvc status` lists only the first."""
    stages = yaml.safe_load((clone / DVC_FILE).read_text())["stages"]
    return set(dvcsync.downstream(stages, stale, list(stages)))


def stages_of(rules: set[str], clone: Path) -> set[str]:
    """The stages whose commands run ``rules``."""
    stages = yaml.safe_load((clone / DVC_FILE).read_text())["stages"]
    return {name for name, stage in stages.items()
            if set(dvcsync.parse_cmd(stage["cmd"])[2]) & rules}


@pytest.mark.slow
def test_a_plain_dvc_pull_into_a_fresh_clone_leaves_nothing_to_do(pushed):
    _, _, origin = pushed
    clone, env, pulled = clone_and_pull(pushed, "clone")
    assert "No file hash info" not in pulled.stdout + pulled.stderr
    assert out_files(clone) == out_files(origin)

    # Snakemake alone sees pulled files newer than those git checked out, and would rerun
    # them; it takes what dvc.lock vouches for as done (dmae.ops.dvc.sync), with no touch step.
    assert planned_jobs(dry_run(clone, {**env, dvcsync.NESTED: "1"})) != {}
    assert planned_jobs(dry_run(clone, env)) == {}
    assert dvc_status(clone, env) == set()

    # ... and recorded its metadata: a changed setting reruns its jobs, in both tools.
    cfg = yaml.safe_load((clone / CONFIG).read_text())
    cfg["pretrain"]["max_steps"] = 4
    (clone / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(dry_run(clone, env))
    assert jobs.get("pretrain") == 1 and "prepare_data" not in jobs, jobs
    assert dvc_status(clone, env) == {"pretrain-micro-dmae"}
    assert stages_of(set(jobs), clone) == rerun_by_dvc(clone, {"pretrain-micro-dmae"})

    # `dvc checkout` restores a deleted checkpoint: still nothing to run.
    run(["git", "checkout", CONFIG], cwd=clone)
    checkpoint = next((clone / "results").rglob("finetune/**/best.safetensors"))
    checkpoint.unlink()
    run([BIN / "dvc", "checkout"], cwd=clone, env=env)
    assert checkpoint.is_file()
    assert planned_jobs(dry_run(clone, env)) == {}
    assert dvc_status(clone, env) == set()


@pytest.mark.slow
def test_what_snakemake_wrote_itself_is_not_taken_for_a_pull(pushed):
    """A run that rewrites an up-to-date stage's bytes (a forced pretraining: the same seed,
    the same checkpoint) beside a changed fine-tuning: the next snakemake must not mark the
    pretraining done again, which would make the new fine-tuning look older than its input.
    (Snakemake's own checksums would hide that for files this small: switched off here.)"""
    clone, env, _ = clone_and_pull(pushed, "own-run")
    cfg = yaml.safe_load((clone / CONFIG).read_text())
    cfg["finetune"]["max_steps"] = 4
    (clone / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    run([BIN / "snakemake", "--cores", "2", "--configfile", CONFIG, "--forcerun", "pretrain"],
        cwd=clone, env=env)
    assert dvc_status(clone, env) >= {"finetune-micro-dmae-sigma_0_25"}
    assert "pretrain-micro-dmae" not in dvc_status(clone, env)  # the same bytes as the lock's
    proc = run([BIN / "snakemake", "-n", "--configfile", CONFIG, "--max-checksum-file-size",
                "1"], cwd=clone, env=env)
    assert planned_jobs(proc) == {}, proc.stdout


@pytest.mark.slow
def test_a_new_lock_alone_keeps_what_snakemake_made_since(pushed):
    """A certification Snakemake redid for a changed setting (DVC calls it stale), then a new
    dvc.lock (a commit, a checkout): the stages upstream of it are recorded anew for
    Snakemake, with their times kept, so the certification does not look older than its
    inputs. (Snakemake's checksums, which would hide it for files this small, are off.)"""
    clone, env, _ = clone_and_pull(pushed, "new-lock")
    cfg = yaml.safe_load((clone / CONFIG).read_text())
    cfg["certify"]["n"] //= 2
    (clone / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    run([BIN / "snakemake", "--cores", "2", "--configfile", CONFIG], cwd=clone, env=env)
    lock = clone / Path(DVC_FILE).with_suffix(".lock")
    lock.write_text(lock.read_text() + "# a new commit\n")
    proc = run([BIN / "snakemake", "-n", "--configfile", CONFIG, "--max-checksum-file-size",
                "1"], cwd=clone, env=env)
    assert planned_jobs(proc) == {}, proc.stdout + proc.stderr
    assert "marked done for Snakemake" in proc.stdout + proc.stderr  # recorded anew

    # A pipeline DVC cannot read (a merge left its markers): a warning, Snakemake goes on.
    dvc_yaml = clone / DVC_FILE
    dvc_yaml.write_text("<<<<<<< HEAD\n" + dvc_yaml.read_text())
    proc = run([BIN / "snakemake", "-n", "--configfile", CONFIG], cwd=clone, env=env)
    assert "could not mark what dvc.lock vouches for as done" in proc.stdout + proc.stderr
    assert planned_jobs(proc) == {}


@pytest.mark.slow
def test_both_tools_rerun_exactly_what_a_code_edit_changes(pushed):
    """A comment and a docstring in every library file: nothing to run, `dvc status` clean.
    A change in the model code: the same stages in both tools, every one that runs a model."""
    clone, env, _ = clone_and_pull(pushed, "edited")
    assert planned_jobs(dry_run(clone, env)) == {}
    for path in sorted((clone / "src" / "dmae").rglob("*.py")):
        text = path.read_text()
        doc = '"""Edited by a test."""\n' if not text.lstrip().startswith('"""') else ""
        path.write_text(doc + text.replace('"""', '"""Edited. ', 1) + "\n# a comment\n")
    assert planned_jobs(dry_run(clone, env)) == {}
    assert dvc_status(clone, env) == set()

    common = clone / "src" / "dmae" / "models" / "common.py"
    text = common.read_text()
    assert "IMAGENET_STD = (0.229, 0.224, 0.225)" in text
    common.write_text(text.replace("0.224, 0.225)", "0.224, 0.226)"))
    jobs = planned_jobs(dry_run(clone, env))  # Snakemake refreshes the digests DVC reads
    assert set(jobs) == {"pretrain", "reconstructions", "finetune", "certify_shard",
                         "merge_certify", "report", "default"}, jobs
    stale = dvc_status(clone, env)
    assert "prepare" not in stale and "pretrain-micro-dmae" in stale
    assert stages_of(set(jobs), clone) == rerun_by_dvc(clone, stale)


@pytest.mark.slow
def test_a_new_sigma_is_new_stages_in_both_tools(pushed):
    """The runs of a config are the stages of its pipeline: snakemake writes the dvc.yaml
    anew when they change, so `dvc status` and `dvc repro` see the new sigma's stages too."""
    clone, env, _ = clone_and_pull(pushed, "new-sigma")
    cfg = yaml.safe_load((clone / CONFIG).read_text())
    cfg["sigmas"] = [0.25, 0.5]
    (clone / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(dry_run(clone, env))
    assert jobs == {"finetune": 1, "certify_shard": 1, "merge_certify": 1, "report": 1,
                    "default": 1}, jobs
    new = {"finetune-micro-dmae-sigma_0_5", "certify-micro-dmae-sigma_0_5"}
    assert new <= set(yaml.safe_load((clone / DVC_FILE).read_text())["stages"])
    assert dvc_status(clone, env) == new | {"report"}


@pytest.mark.slow
def test_dvc_exp_run_sets_a_parameter_and_reruns_only_what_reads_it(pushed):
    """`dvc exp run -S` on the config file: the certification and the report run again
    (through their Snakemake targets), nothing else, and the experiment records the value."""
    clone, env, _ = clone_and_pull(pushed, "experiment")
    before = out_files(clone)
    proc = run([BIN / "dvc", "exp", "run", DVC_FILE, "-S", f"{CONFIG}:certify.n=60", "-n",
                "n60"], cwd=clone, env=env)
    ran = set(re.findall(r"Running stage '(?:[^':]+:)?([^']+)'", proc.stdout + proc.stderr))
    assert ran == {"certify-micro-dmae-sigma_0_25", "report"}, proc.stdout + proc.stderr
    after = out_files(clone)
    changed = {p for p in before if before[p] != after.get(p)}
    assert changed and all("/certify/" in p or "/tables/" in p or "/figures/" in p
                           for p in changed), changed
    shown = run([BIN / "dvc", "exp", "show", "--json"], cwd=clone, env=env).stdout
    assert '"n60"' in shown and "60" in shown


@pytest.mark.slow
def test_pulling_the_pretrained_checkpoint_runs_finetuning_onwards(pushed):
    root, home, origin = pushed
    clone = root / "partial"
    run(["git", "clone", "-q", origin, clone], cwd=root)
    env = tool_env(home, clone)

    proc = make_pull(clone, env, stages="pretrain-micro-dmae")
    # The checkpoint, the data it was trained on (--with-deps) and, from git, its figure.
    assert ("3 of 6 stages as dvc.lock records them, marked done for Snakemake: prepare, "
            "pretrain-micro-dmae, reconstructions-micro-dmae") in proc.stdout
    pulled = out_files(clone)
    assert pulled == out_files(origin, ["prepare", "pretrain-micro-dmae"]) | out_files(
        origin, ["reconstructions-micro-dmae", "report"])
    assert not any("/finetune/" in p or "/certify/" in p for p in pulled)
    jobs = planned_jobs(dry_run(clone, env))
    assert set(jobs) == {"finetune", "certify_shard", "merge_certify", "report", "default"}, jobs
