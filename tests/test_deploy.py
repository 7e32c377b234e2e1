"""The workflow as the Snakemake workflow catalog deploys it: `snakedeploy deploy-workflow`
writes a Snakefile that uses this repository's workflow as a module, read from git, beside
copies of its config/ and profiles/; the catalog's files describe it; and the conda
environment of its rules (--sdm conda) is requirements.lock."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, planned_jobs
from dvc_repos import copy_checkout, run
from test_reproducibility import locked
from workflow_runs import snakemake

CATALOG = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
ENV = REPO / "workflow" / "envs" / "dmae.yaml"
POST_DEPLOY = ENV.with_name("dmae.post-deploy.sh")
# Where the test's repository pretends to live: snakedeploy clones a file:// URL with git,
# as it does a GitHub URL, when the URL names github.com, and writes the module's source as
# github("<owner>/<name>", path=..., commit=...).
OWNER_NAME = "dmae-reproduction/dmae"


def commit_working_tree(root: Path) -> str:
    """A git repository at ``root`` whose one commit is this checkout's working tree, as git
    would commit it (committed or not): the test deploys the code that is here."""
    copy_checkout(root)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost",
           "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
    run([*git, "init", "-q"], cwd=root)
    run([*git, "add", "-A"], cwd=root)
    run([*git, "commit", "-q", "-m", "the working tree"], cwd=root)
    return run(["git", "rev-parse", "HEAD"], cwd=root).stdout.strip()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> tuple[Path, Path, str]:
    """(deployed folder, the repository it was deployed from, its commit)."""
    source = tmp_path_factory.mktemp("hosting") / "github.com" / OWNER_NAME
    source.mkdir(parents=True)
    commit = commit_working_tree(source)
    dest = tmp_path_factory.mktemp("deployed")
    run([BIN / "snakedeploy", "deploy-workflow", f"file://{source}", dest, "--commit", commit],
        cwd=dest)
    snakefile = dest / "workflow" / "Snakefile"
    module = f'github("{OWNER_NAME}", path="workflow/Snakefile", commit="{commit}")'
    assert module in snakefile.read_text()
    # Snakemake would fetch that from github.com: it reads the same commit from the clone.
    snakefile.write_text(snakefile.read_text().replace(
        module, f'gitfile("{source}", path="workflow/Snakefile", commit="{commit}")'))
    return dest, source, commit


def test_snakedeploy_copies_the_configs_profiles_and_license(deployed):
    dest, _, _ = deployed
    assert sorted(p.name for p in (dest / "config").iterdir()) == sorted(
        p.name for p in (REPO / "config").iterdir())
    assert (dest / "profiles" / "default" / "config.yaml").is_file()
    assert (dest / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert "use rule * from dmae" in (dest / "workflow" / "Snakefile").read_text()


def test_a_deployed_copy_dry_runs_the_jobs_of_a_checkout(deployed, tmp_path):
    """With the catalog's mandatory flags, from the deployed folder; the code identity file,
    which belongs to a checkout, is neither written there nor in the repository."""
    dest, source, _ = deployed
    flags = shlex.split(CATALOG["usage"]["mandatory-flags"]["flags"])
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = run([BIN / "snakemake", "-n", "--cores", "1", *flags], cwd=dest, env=env)
    jobs = planned_jobs(proc)
    assert "workflow/code-identity.yaml not written" in proc.stdout + proc.stderr
    assert not (dest / "workflow" / "code-identity.yaml").exists()
    assert run(["git", "status", "--porcelain"], cwd=source).stdout == ""

    configfile = flags[flags.index("--configfile") + 1]
    here = planned_jobs(snakemake(tmp_path, REPO / configfile, "-n"))
    # The checkout's default target is the root Snakefile's rule `default`, the module's `all`
    assert jobs.pop("all") == here.pop("default") == 1
    assert jobs == here and jobs["finetune"] > 0


def test_the_catalog_file_is_in_the_catalogs_format():
    assert set(CATALOG) == {"usage"}
    usage = CATALOG["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment"}
    assert set(usage["mandatory-flags"]) == {"desc", "flags"}
    assert usage["software-stack-deployment"] == {"conda": True, "apptainer": False,
                                                  "apptainer+conda": False, "report": True}
    flags = shlex.split(usage["mandatory-flags"]["flags"])
    assert (REPO / flags[flags.index("--configfile") + 1]).is_file()


def test_the_config_readme_names_every_config():
    text = (REPO / "config" / "README.md").read_text()
    for path in sorted((REPO / "config").glob("*.yaml")):
        assert f"`{path.name}`" in text, f"config/README.md does not say what {path.name} is for"


# ------------------------------------------------------------- the conda environment


def test_the_conda_environment_installs_what_the_lock_pins():
    """Every package the environment gets is pinned by requirements.lock at the lock's
    version: conda gives the Python the lock was resolved for and pip, the post-deploy
    script the lock (hash-checked, no resolution) and then the project without dependencies."""
    pins = {name: version for name, (version, _) in locked().items()}
    resolved_for = re.search(r"--python-version (\S+)", (REPO / "Makefile").read_text())[1]
    env = yaml.safe_load(ENV.read_text())
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"{ENV.name}: a pip section would resolve beside the lock"
        name, _, version = dep.partition("=")
        if name == "python":
            assert version == resolved_for, f"{ENV.name}: {dep}, the lock is for {resolved_for}"
        elif name != "pip":  # the installer, which the lock leaves out
            assert pins.get(name) == version, f"{ENV.name}: {dep}, the lock pins {pins.get(name)}"

    script = POST_DEPLOY.read_text()
    digest = re.search(r"^LOCK_SHA256=(\w+)$", script, re.M)[1]
    assert digest == hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest(), (
        f"{POST_DEPLOY.name} names another lock: make lock")
    installs = [line.split() for line in script.splitlines() if "pip install" in line]
    assert installs == [["python", "-m", "pip", "install", "--require-hashes", "--no-deps", "-r",
                         '"$lock"'],
                        ["python", "-m", "pip", "install", "--no-deps", "-e", '"$checkout"']]


@pytest.fixture
def pip_calls(tmp_path) -> tuple[dict, Path]:
    """An environment whose `python -m pip` only records its arguments (any other python
    command is the real one), and the file it records them in."""
    calls = tmp_path / "pip_calls.txt"
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nif [ "$1 $2" = "-m pip" ]; then shift 2; echo "$*" >> '
                    f'"{calls}"; exit 0; fi\nexec "{sys.executable}" "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    env.pop("DMAE_CHECKOUT", None)
    return env, calls


def test_the_post_deploy_script_installs_the_lock_then_the_checkout(pip_calls, tmp_path):
    env, calls = pip_calls
    proc = subprocess.run(["bash", POST_DEPLOY], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert calls.read_text().splitlines() == [
        "install --require-hashes --no-deps -r ./requirements.lock",
        "install --no-deps -e ."]

    # A deployed copy names the checkout; one with another lock stops before any install.
    other = tmp_path / "other"
    other.mkdir()
    (other / "requirements.lock").write_text("numpy==2.0.0\n")
    calls.unlink()
    proc = subprocess.run(["bash", POST_DEPLOY], cwd=tmp_path, env={**env, "DMAE_CHECKOUT":
                          str(other)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "set DMAE_CHECKOUT" in proc.stderr
    assert f"{other}/requirements.lock is not the lock" in proc.stderr and not calls.exists()
