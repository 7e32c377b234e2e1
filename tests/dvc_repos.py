"""Scratch repositories for the DVC round trips, and the one that ran the tiny pipeline and
pushed it (`pushed_repository`), built once per session for test_dvc.py and
test_dvc_remote.py: one `dvc repro` for both."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, DEBIAN_FMNIST, REPO, planned_jobs

from dmae.ops.dvc import sync as dvcsync

NAME = "dvctest"
CONFIG = f"config/{NAME}.yaml"
DVC_FILE = f"dvc/{NAME}/dvc.yaml"  # a pipeline of its own, beside the committed ones
LOCK = f"dvc/{NAME}/dvc.lock"
# What .gitignore needs so that git keeps the small results (dvc.yaml: cache: false) while
# every other file under results/<name>/ stays ignored (DVC-cached or logs).
SMALL_RESULTS_IN_GIT = ("/results/*/*", "!/results/*/tables/", "!/results/*/figures/")


def run(cmd, cwd, env=None, check=True):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed in {cwd} "
                             f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


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
    """The tools' environment for ``checkout`` on a machine whose home is ``home``: no AWS
    settings leak in from the caller (a test passes the ones it means)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DVC_", "SNAKEMAKE_", "GIT_", "VIRTUAL_ENV", "AWS_"))}
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
        for rel in dvcsync.entry_paths(stage.get("outs")) + dvcsync.entry_paths(stage.get("plots")):
            path = checkout / rel
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    hashes[str(f.relative_to(checkout))] = hashlib.sha256(
                        f.read_bytes()).hexdigest()
    return hashes


def make(target: str, checkout: Path, env: dict, stages: str = "", check: bool = True
         ) -> subprocess.CompletedProcess:
    # The Makefile's own recipe, with this venv (-o venv: no install step).
    return run(["make", "-o", "venv", target, f"VENV={BIN.parent}", f"CONFIG={CONFIG}",
                f"STAGES={stages}"], cwd=checkout, env=env, check=check)


def make_pull(checkout: Path, env: dict, stages: str = "", check: bool = True
              ) -> subprocess.CompletedProcess:
    return make("pull", checkout, env, stages, check)


def dry_run(checkout: Path, env: dict) -> subprocess.CompletedProcess:
    return run([BIN / "snakemake", "-n", "--configfile", CONFIG], cwd=checkout, env=env)


_BUILT: dict[str, tuple[Path, Path, Path]] = {}


def pushed_repository(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A copy of the repository that ran the tiny pipeline (its own dvc/<name>/dvc.yaml) with
    `dvc repro`, committed its dvc.lock and small results, and pushed to the default remote
    (under a temporary HOME): (scratch root, that HOME, the repository). Each test module's
    session fixture calls this; the first call builds it, the others get the same one."""
    if "pushed" not in _BUILT:
        _BUILT["pushed"] = _build_pushed(tmp_path_factory)
    return _BUILT["pushed"]


def _build_pushed(tmp_path_factory) -> tuple[Path, Path, Path]:
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
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    env = tool_env(home, origin)
    (origin / CONFIG).write_text(yaml.safe_dump(tiny_config(), sort_keys=False))
    run([BIN / "python", "-m", "dmae.ops.dvc", "--config", CONFIG], cwd=origin, env=env)
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
    make("push", origin, env)
    assert any((home / ".cache" / "dmae-dvc-remote").rglob("*")), "nothing in the remote"
    assert planned_jobs(dry_run(origin, env)) == {}
    return root, home, origin
