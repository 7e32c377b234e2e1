"""DVC: dvc.yaml is generated from the config, follows the Snakemake DAG, and pushed outputs
pulled into a fresh clone leave Snakemake nothing to do (real dvc, git, make and snakemake)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BIN, DEBIAN_FMNIST, REPO, planned_jobs

from dmae import config as cfglib
from dmae import dvcstages, pipeline

DEFAULT = "config/default.yaml"


def run(cmd, cwd, env=None, check=True):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed in {cwd} "
                             f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


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
    for module in sorted(set(RULE_MODULES.values())):
        script = ("import json, sys, dmae.cli, " + module + "; print(json.dumps(sorted("
                  "m.__file__ for n, m in sys.modules.items() if n.startswith('dmae') "
                  "and getattr(m, '__file__', None))))")
        imported = set(json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                                 capture_output=True, text=True).stdout))
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

NAME = "dvctest"
CONFIG = f"config/{NAME}.yaml"
DVC_FILE = f"dvc/{NAME}/dvc.yaml"  # a pipeline of its own, beside the committed ones
LOCK = f"dvc/{NAME}/dvc.lock"
# What .gitignore needs so that git keeps the small results (dvc.yaml: cache: false) while
# every other file under results/<name>/ stays ignored (DVC-cached or logs).
SMALL_RESULTS_IN_GIT = ("/results/*/*", "!/results/*/tables/", "!/results/*/figures/")


def tiny_config() -> dict:
    """config/smoke.yaml cut to one method, one sigma and one shard: 6 stages."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["name"] = NAME
    cfg["methods"] = {"dmae": cfg["methods"]["dmae"]}
    cfg["sigmas"] = [0.25]
    cfg["certify"]["shards"] = 1
    return cfg


def copy_checkout(dest: Path) -> None:
    """This checkout's files that git would commit (tracked, or new and not ignored)."""
    listing = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  cwd=REPO).stdout
    for rel in filter(None, listing.split("\0")):
        src = REPO / rel
        if src.is_symlink() or src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)


def tool_env(home: Path, checkout: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DVC_", "SNAKEMAKE_", "GIT_", "VIRTUAL_ENV"))}
    name = {"GIT_AUTHOR_NAME": "test", "GIT_COMMITTER_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.org", "GIT_COMMITTER_EMAIL": "test@example.org"}
    return {**env, **name, "HOME": str(home), "PYTHONPATH": str(checkout / "src"),
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "DVC_SITE_CACHE_DIR": str(home / "dvc-site"), "DVC_NO_ANALYTICS": "1"}


def out_files(checkout: Path, stage_names=None) -> dict[str, str]:
    """sha256 of every file the stages declare (folders expanded) that exists."""
    stages = yaml.safe_load((checkout / DVC_FILE).read_text())["stages"]
    hashes = {}
    for name, stage in stages.items():
        if stage_names is not None and name not in stage_names:
            continue
        for rel in dvcstages._paths(stage.get("outs")) + dvcstages._paths(stage.get("plots")):
            path = checkout / rel
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    hashes[str(f.relative_to(checkout))] = hashlib.sha256(
                        f.read_bytes()).hexdigest()
    return hashes


def make_pull(checkout: Path, env: dict, stages: str = "") -> subprocess.CompletedProcess:
    # The Makefile's own recipe, with this venv (-o venv: no install step).
    return run(["make", "-o", "venv", "pull", f"VENV={BIN.parent}", f"CONFIG={CONFIG}",
                f"STAGES={stages}"], cwd=checkout, env=env)


def dry_run(checkout: Path, env: dict) -> subprocess.CompletedProcess:
    return run([BIN / "snakemake", "-n", "--configfile", CONFIG], cwd=checkout, env=env)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A copy of the repository that ran the tiny pipeline (its own dvc/<name>/dvc.yaml) with
    `dvc repro`, committed its dvc.lock and small results, and pushed to the default remote
    (under a temporary HOME)."""
    if not DEBIAN_FMNIST.is_dir():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FMNIST}): "
                    "no data to run the pipeline on")
    root = tmp_path_factory.mktemp("dvc")
    home, origin = root / "home", root / "origin"
    home.mkdir()
    copy_checkout(origin)
    # The tiny config shares data/prepared/fashion-mnist with the default's pipeline, and DVC
    # allows one owner per output: this repository's only pipeline is the tiny one.
    for committed in ("dvc.yaml", "dvc.lock", "dvc"):
        path = origin / committed
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    env = tool_env(home, origin)
    (origin / CONFIG).write_text(yaml.safe_dump(tiny_config(), sort_keys=False))
    run([BIN / "python", "-m", "dmae.dvcstages", "--config", CONFIG], cwd=origin, env=env)
    assert (origin / DVC_FILE).is_file()
    run(["git", "init", "-q"], cwd=origin, env=env)
    probe = f"results/{NAME}/tables/x.csv"
    if run(["git", "check-ignore", "-q", probe], cwd=origin, env=env, check=False).returncode == 0:
        # The checkout still ignores all of results/ (see docs/dvc.md): apply the change here.
        gitignore = origin / ".gitignore"
        text = gitignore.read_text().replace("/results/*\n", "")
        gitignore.write_text(text + "\n".join(SMALL_RESULTS_IN_GIT) + "\n")
        assert run(["git", "check-ignore", "-q", probe], cwd=origin, env=env,
                   check=False).returncode == 1, ".gitignore still hides results tables"
    run(["git", "add", "-A"], cwd=origin, env=env)
    run(["git", "commit", "-qm", "code"], cwd=origin, env=env)

    run([BIN / "dvc", "repro", DVC_FILE], cwd=origin, env=env)

    # git sees only dvc.lock and the small results: DVC-cached outputs, logs, .snakemake/ and
    # DVC's own files stay out (and DVC wrote no .gitignore of its own).
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=origin,
                 env=env).stdout.splitlines()
    new = {line[3:] for line in status}
    assert LOCK in new
    assert all(p == LOCK or p.startswith((f"results/{NAME}/tables/",
                                                f"results/{NAME}/figures/")) for p in new), new
    run(["git", "add", "-A"], cwd=origin, env=env)
    run(["git", "commit", "-qm", "results"], cwd=origin, env=env)
    run(["make", "-o", "venv", "push", f"VENV={BIN.parent}", f"CONFIG={CONFIG}"], cwd=origin,
        env=env)
    assert any((home / ".cache" / "dmae-dvc-remote").rglob("*")), "nothing in the remote"
    assert planned_jobs(dry_run(origin, env)) == {}
    return root, home, origin


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
