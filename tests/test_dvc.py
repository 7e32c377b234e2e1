"""DVC: dvc.yaml is generated from the config, follows the Snakemake DAG, and pushed outputs
pulled into a fresh clone leave Snakemake nothing to do (real dvc, git, make and snakemake)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, planned_jobs
from dvc_repos import (
    CONFIG,
    DVC_FILE,
    dry_run,
    make_pull,
    out_files,
    pushed_repository,
    run,
    tiny_config,
    tool_env,
)

from dmae import config as cfglib
from dmae import dvcstages, pipeline

DEFAULT = "config/default.yaml"


# ----------------------------------------------------------------------- the generated file


def written(configfile: str) -> dict:
    """A config file's own keys (DVC params name only those)."""
    return yaml.safe_load((REPO / configfile).read_text())


@pytest.mark.parametrize("configfile", dvcstages.PIPELINES)
def test_committed_dvc_yaml_is_the_generated_one(configfile):
    expected = dvcstages.render(cfglib.load(REPO / configfile), configfile, written(configfile))
    committed = REPO / dvcstages.dvc_file(configfile)
    assert committed.is_file() and committed.read_text() == expected, (
        f"{committed.relative_to(REPO)} is stale: run `python -m dmae.dvcstages --all`")


def test_every_committed_pipeline_is_one_dvc_graph():
    """DVC reads every dvc.yaml of the repository as one graph: no output may have two owners
    (which fails every dvc command), and CIFAR-10's continued pretraining depends on the
    ImageNet stage that writes its starting checkpoint."""
    assert dvcstages.dvc_file(DEFAULT) == "dvc.yaml"
    assert [dvcstages.dvc_file(c) for c in dvcstages.PIPELINES[1:]] == [
        "dvc/cifar10/dvc.yaml", "dvc/imagenet/dvc.yaml"]
    stage_list = run([BIN / "dvc", "stage", "list", "--all", "--name-only"], cwd=REPO).stdout
    names = set(stage_list.split())
    assert "prepare" in names and "dvc/cifar10/dvc.yaml:prepare" in names
    assert "dvc/imagenet/dvc.yaml:pretrain-vit_b-dmae" in names
    dag = run([BIN / "dvc", "dag", "--md", "dvc/cifar10/dvc.yaml:pretrain-vit_b-in1k"],
              cwd=REPO).stdout
    assert "dvc/imagenet/dvc.yaml:pretrain-vit_b-dmae" in dag
    # A stage of a dvc.yaml in dvc/<name>/ runs from the repository, as the top-level ones.
    stages = yaml.safe_load((REPO / "dvc/cifar10/dvc.yaml").read_text())["stages"]
    assert {s["wdir"] for s in stages.values()} == {"../.."}


def test_check_mode_fails_on_a_stale_file_and_write_mode_fixes_it(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "dvc.yaml"
    out.write_text("stages: {}\n")
    assert dvcstages.main(["--config", DEFAULT, "--output", str(out), "--check"]) == 1
    assert "+stages:" in capsys.readouterr().out  # a diff
    assert dvcstages.main(["--config", DEFAULT, "--output", str(out)]) == 0
    assert dvcstages.main(["--config", DEFAULT, "--output", str(out), "--check"]) == 0
    assert out.read_text() == (REPO / "dvc.yaml").read_text()
    capsys.readouterr()
    assert dvcstages.main(["--all", "--check"]) == 0
    assert capsys.readouterr().out.count("is up to date") == len(dvcstages.PIPELINES)
    assert dvcstages.main(["--config", "config/imagenet.yaml", "--path"]) == 0
    assert capsys.readouterr().out == "dvc/imagenet/dvc.yaml\n"


# The library module each rule's `dmae` command runs (dmae.cli imports it when called).
RULE_MODULES = {"prepare_data": "dmae.data.stage", "pretrain": "dmae.train.stage",
                "finetune": "dmae.train.stage", "certify_shard": "dmae.certify.stage",
                "merge_certify": "dmae.certify.stage",
                "reconstructions": "dmae.report.reconstructions", "report": "dmae.report.build"}


def test_each_rule_lists_every_library_file_its_command_imports():
    """A file a job imports but its rule does not list would change results without making
    the job (or its DVC stage) stale."""
    assert set(RULE_MODULES) == set(pipeline.RULES)

    def imported_by(module: str) -> set[str]:  # in a fresh process: nothing imported before
        script = ("import json, sys, dmae.cli, " + module + "; print(json.dumps(sorted("
                  "m.__file__ for n, m in sys.modules.items() if n.startswith('dmae') "
                  "and getattr(m, '__file__', None))))")
        return set(json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                             capture_output=True, text=True).stdout))

    modules = sorted(set(RULE_MODULES.values()))
    with ThreadPoolExecutor(len(modules)) as pool:  # side by side: seconds of imports each
        imports = dict(zip(modules, pool.map(imported_by, modules), strict=True))
    for module, imported in imports.items():
        for rule in (r for r, m in RULE_MODULES.items() if m == module):
            listed = {str(path) for path in pipeline.code_files(rule)}
            assert imported <= listed, f"{rule} does not list {sorted(imported - listed)}"


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


def test_stage_names_are_valid_and_every_output_has_one_owner():
    stages = dvcstages.dvc_stages(cfglib.load(REPO / DEFAULT), DEFAULT, written(DEFAULT))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", name) for name in stages)
    owners: dict[str, str] = {}
    for name, stage in stages.items():
        for path in dvcstages._paths(stage.get("outs")) + dvcstages._paths(stage.get("plots")):
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


def _repo_relative(path: str, workdir: Path) -> str:
    """A job's path as the repository sees it: code files (listed relative to the scratch
    working directory) become src/..., workflow outputs stay as they are."""
    full = Path(os.path.normpath(workdir / path))
    return str(full.relative_to(REPO)) if full.is_relative_to(REPO) else path


@pytest.mark.parametrize("configfile", sorted(str(p.relative_to(REPO))
                                              for p in (REPO / "config").glob("*.yaml")))
def test_stages_follow_the_snakemake_dag(tmp_path, configfile):
    """Every job of the config's DAG belongs to exactly one stage, which runs its rule and
    declares all its outputs and inputs (code, data, upstream checkpoints)."""
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
            job[m[1]] = [_repo_relative(p, tmp_path) for p in m[2].split(", ")]
    jobs = [j for j in jobs if j["rule"] not in ("default", "all")]
    assert {j["rule"] for j in jobs} >= {"prepare_data", "pretrain", "finetune",
                                        "certify_shard", "merge_certify", "report"}

    stages = dvcstages.dvc_stages(cfg, configfile, written(configfile))
    outs = {n: dvcstages._paths(s.get("outs")) + dvcstages._paths(s.get("plots"))
            + dvcstages._paths(s.get("metrics"))
            for n, s in stages.items()}
    produced = {p for j in jobs for p in j["output"]}
    used_by_stage: dict[str, set[str]] = {n: set() for n in stages}
    for j in jobs:
        owner = [n for n in stages if dvcstages._inside(j["output"][0], outs[n])]
        assert len(owner) == 1, f"{j['rule']} {j['output'][0]}: stages {owner}"
        name = owner[0]
        used_by_stage[name].add(j["rule"])
        assert all(dvcstages._inside(o, outs[name]) for o in j["output"]), (name, j["output"])
        cmd = stages[name]["cmd"]
        assert j["rule"] in cmd.split("--allowed-rules", 1)[1].split(), (name, j["rule"])
        for path in j["input"]:
            own = path in produced and dvcstages._inside(path, outs[name])
            assert own or dvcstages._inside(path, stages[name]["deps"]), (
                f"stage {name} lacks the dependency {path} of rule {j['rule']}")
    for name, stage in stages.items():
        rules = stage["cmd"].split("--allowed-rules", 1)[1].split()
        assert set(rules) == used_by_stage[name], (name, rules, used_by_stage[name])
        targets, stage_config = dvcstages.parse_cmd(stage["cmd"])
        assert stage_config == configfile
        assert all(t in rules or t in produced for t in targets), (name, targets)
        for path in outs[name]:  # nothing declared that the workflow does not make
            base = path.removesuffix(".meta.json")
            assert any(dvcstages._inside(p, [path]) for p in produced) or base in produced, path


def test_up_to_date_stages_need_up_to_date_upstream_stages():
    raw = tiny_config()
    raw["methods"]["rs"] = {"pretraining": None, "consistency": False}
    stages = dvcstages.dvc_stages(cfglib.validate(copy.deepcopy(raw)), CONFIG, raw)
    graph = dvcstages.stage_graph(stages)
    pre, ft_dmae, ft_rs = ("pretrain-micro-dmae", "finetune-micro-dmae-sigma_0_25",
                           "finetune-micro-rs-sigma_0_25")
    assert graph["prepare"] == set()
    assert graph[pre] == {"prepare"}
    assert graph[ft_dmae] == {"prepare", pre}
    assert graph[ft_rs] == {"prepare"}
    assert graph["certify-micro-rs-sigma_0_25"] == {"prepare", ft_rs}
    assert graph["report"] == {n for n in stages if n.startswith(("certify-", "finetune-"))}
    assert dvcstages.up_to_date_stages(stages, changed=set()) == list(stages)
    fresh = dvcstages.up_to_date_stages(stages, changed={pre})
    # Everything downstream of the changed stage is out, whatever DVC says of it.
    assert set(fresh) == {"prepare", ft_rs, "certify-micro-rs-sigma_0_25"}


# --------------------------------------------------------------------------- the round trip


@pytest.fixture(scope="session")
def pushed(tmp_path_factory):
    return pushed_repository(tmp_path_factory)  # one build for test_dvc{,_remote}.py


@pytest.mark.slow
def test_pull_into_a_fresh_clone_leaves_nothing_to_do(pushed):
    root, home, origin = pushed
    clone = root / "clone"
    run(["git", "clone", "-q", origin, clone], cwd=root)
    env = tool_env(home, clone)

    # `dvc pull` alone: files come back with new times, older git files look stale.
    run([BIN / "dvc", "pull", DVC_FILE], cwd=clone, env=env)
    assert planned_jobs(dry_run(clone, env)) != {}, "expected stale-looking outputs"

    proc = make_pull(clone, env)
    assert "up to date (6 of 6)" in proc.stdout
    assert planned_jobs(dry_run(clone, env)) == {}
    assert out_files(clone) == out_files(origin)
    assert "up to date" in run([BIN / "dvc", "status", DVC_FILE], cwd=clone, env=env).stdout

    # The touch recorded Snakemake's metadata: a changed setting reruns its jobs.
    cfg = yaml.safe_load((clone / CONFIG).read_text())
    cfg["pretrain"]["max_steps"] = 4
    (clone / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(dry_run(clone, env))
    assert jobs.get("pretrain") == 1 and "prepare_data" not in jobs, jobs
    assert "pretrain-micro-dmae" in run([BIN / "dvc", "status", DVC_FILE], cwd=clone,
                                        env=env).stdout


@pytest.mark.slow
def test_pulling_the_pretrained_checkpoint_runs_finetuning_onwards(pushed):
    root, home, origin = pushed
    clone = root / "partial"
    run(["git", "clone", "-q", origin, clone], cwd=root)
    env = tool_env(home, clone)

    proc = make_pull(clone, env, stages="pretrain-micro-dmae")
    # The checkpoint, the data it was trained on (--with-deps) and, from git, its figure.
    assert "up to date (3 of 6): prepare, pretrain-micro-dmae, reconstructions-micro-dmae" in (
        proc.stdout)
    pulled = out_files(clone)
    assert pulled == out_files(origin, ["prepare", "pretrain-micro-dmae"]) | out_files(
        origin, ["reconstructions-micro-dmae", "report"])
    assert not any("/finetune/" in p or "/certify/" in p for p in pulled)
    jobs = planned_jobs(dry_run(clone, env))
    assert set(jobs) == {"finetune", "certify_shard", "merge_certify", "report", "default"}, jobs
