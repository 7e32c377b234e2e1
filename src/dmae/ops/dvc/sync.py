"""Outputs that DVC put in place (`dvc pull`, `dvc checkout`, a switch of branch) count as
done for Snakemake, with no step to remember.

DVC restores a file's bytes, not its time, and a fresh clone has no Snakemake records: after
a pull, Snakemake sees checkpoints newer than the tables git checked out, and shards newer
than their merge, and would rerun them; and with no record of the settings that made an
output, it could not tell when a later edit should rerun it.

So the workflow calls ``sync`` each time it starts (workflow/rules/common.smk). It looks at
the pipeline of the config being run (its dvc.yaml and dvc.lock, when the working directory
has them; a dvc.yaml whose config's runs changed is first written anew) and, when the lock or
any output changed since its last look (size and time of each file, kept in
``.snakemake/dmae-dvc-sync/``), asks ``dvc status`` which stages are up to date: their code
digests, settings and inputs as dvc.lock records, and every output present with the recorded
hash. Of those, the ones whose outputs changed since the last look, and the
up-to-date stages downstream of them, are marked done for Snakemake: a nested
``snakemake --touch`` of their targets touches their outputs in DAG order and records
Snakemake's metadata for each job (settings, code digest, inputs), so a later edit reruns
exactly the jobs it concerns. A new lock alone gets the other up-to-date stages recorded
anew, their outputs' times kept. Stages DVC does not vouch for are left alone, and Snakemake runs
them as usual. A run that ends records the look too (``remember``): what Snakemake wrote
itself is not taken for what DVC put in place. Nothing happens inside a DVC stage's own
command (DVC holds its lock then) or in a cluster job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import yaml

from dmae.config import load
from dmae.io import atomic_path
from dmae.ops.dvc.stages import dvc_file, posix, render

NESTED = "DMAE_DVC_SYNC"  # set for the nested snakemake, which must not sync again
STATE_DIR = ".snakemake/dmae-dvc-sync"


def tool(name: str) -> str:
    """A tool installed beside this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else (shutil.which(name) or name)


def inside(path: str, outs: list[str]) -> str | None:
    """The entry of ``outs`` that is ``path`` or a folder holding it."""
    for out in outs:
        if path == out or path.startswith(out.rstrip("/") + "/"):
            return out
    return None


def entry_paths(entries: list) -> list[str]:
    """The paths of a stage's deps/outs/plots list (an entry is a path or {path: options})."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def outputs(stage: dict) -> list[str]:
    return [posix(p) for key in ("outs", "plots", "metrics")
            for p in entry_paths(stage.get(key))]


def _load(path: Path) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # dvc.yaml runs to thousands of lines
    return yaml.load(path.read_text(), Loader=loader)


def stage_graph(stages: dict) -> dict[str, set[str]]:
    """Upstream stages of each stage: those with an output that is (or holds) one of its deps."""
    outs = {name: outputs(s) for name, s in stages.items()}
    return {name: {other for other, o in outs.items()
                   if other != name and any(inside(posix(d), o)
                                            for d in entry_paths(s.get("deps")))}
            for name, s in stages.items()}


def parse_cmd(cmd: str) -> tuple[list[str], str, list[str]]:
    """(Snakemake targets, config file, allowed rules) of a generated stage command."""
    words = shlex.split(cmd)
    if not words or Path(words[0]).name != "snakemake" or "--configfile" not in words:
        raise ValueError(f"not a generated snakemake command: {cmd}")
    targets = []
    for word in words[1:]:
        if word.startswith("-"):
            break
        targets.append(word)
    rules = []
    if "--allowed-rules" in words:
        for word in words[words.index("--allowed-rules") + 1:]:
            if word.startswith("-"):
                break
            rules.append(word)
    return targets, words[words.index("--configfile") + 1], rules


def up_to_date_stages(stages: dict, changed: set[str]) -> list[str]:
    """Stages DVC reports unchanged whose upstream stages are all such stages too."""
    graph = stage_graph(stages)
    fresh: dict[str, bool] = {}

    def ok(name: str, seen: tuple[str, ...] = ()) -> bool:
        if name not in fresh:
            if name in seen:
                raise ValueError(f"dvc.yaml has a cycle through stage {name}")
            fresh[name] = name not in changed and all(ok(u, (*seen, name))
                                                      for u in graph[name])
        return fresh[name]

    return [name for name in stages if ok(name)]


def downstream(stages: dict, names: set[str], among: list[str]) -> list[str]:
    """``names`` and the stages of ``among`` that depend on them, at any distance, in the
    order of ``among``."""
    graph = stage_graph(stages)
    reached = set(names)
    grew = True
    while grew:
        grew = False
        for name in among:
            if name not in reached and graph[name] & reached:
                reached.add(name)
                grew = True
    return [name for name in among if name in reached]


# ----------------------------------------------------------------------- the state we last saw


def _state_file(root: Path, dvc_yaml: str) -> Path:
    return root / STATE_DIR / (posix(dvc_yaml).replace("/", "__") + ".json")


def look(root: Path, dvc_yaml: str, stages: dict) -> dict:
    """The lock's hash, and the size and time of each file every stage declares."""
    lock = root / PurePosixPath(dvc_yaml).with_suffix(".lock")
    files: dict[str, list[int]] = {}
    for stage in stages.values():
        for out in outputs(stage):
            path = root / out
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    st = f.stat()
                    files[posix(f.relative_to(root))] = [st.st_size, st.st_mtime_ns]
    digest = hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None
    return {"lock": digest, "files": files}


def _changed_stages(stages: dict, before: dict, now: dict) -> set[str]:
    """Stages with a file that is new, gone or different since ``before``."""
    old, new = before.get("files", {}), now["files"]
    moved = {p for p in old.keys() | new.keys() if old.get(p) != new.get(p)}
    return {name for name, stage in stages.items()
            if any(inside(p, outputs(stage)) for p in moved)}


# ------------------------------------------------------------------------------- the sync


def dvc_changed_stages(root: Path, dvc_yaml: str) -> set[str]:
    """The stages of ``dvc_yaml`` that `dvc status` reports (anything not as dvc.lock says)."""
    proc = subprocess.run([tool("dvc"), "status", "--json", dvc_yaml], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status {dvc_yaml} failed:\n{proc.stdout}{proc.stderr}")
    changed = set()
    # Keys are stage names of the top-level dvc.yaml, or "<dvc.yaml path>:<name>".
    for key in json.loads(proc.stdout or "{}"):
        path, _, name = key.rpartition(":")
        if posix(path or "dvc.yaml") == posix(dvc_yaml):
            changed.add(name)
    return changed


def mark_done(root: Path, dvc_yaml: str, stages: dict, names: list[str],
              snakefile: str | None = None) -> None:
    """`snakemake --touch` the jobs of the stages ``names`` (up to date ones, whose upstream
    stages are up to date too): their outputs in DAG order, and Snakemake's metadata."""
    targets, rules, configs = [], [], set()
    for name in names:
        stage_targets, configfile, stage_rules = parse_cmd(stages[name]["cmd"])
        targets += stage_targets
        rules += stage_rules
        configs.add(configfile)
    if len(configs) > 1:
        raise ValueError(f"{dvc_yaml}: stages use several config files: {sorted(configs)}")
    # Only the stages' own rules: forcing all of a target's DAG would touch (and so make
    # stale-looking) the outputs of upstream stages that nobody changed.
    cmd = [tool("snakemake"), *targets, "--touch", "--forceall",
           "--allowed-rules", *dict.fromkeys(rules), "--cores", "1", "--quiet", "all",
           "--configfile", configs.pop(), *(["--snakefile", snakefile] if snakefile else [])]
    proc = subprocess.run(cmd, cwd=root, env={**os.environ, NESTED: "1"},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")


def sync(root: Path | str, dvc_yaml: str, *, snakefile: str | None = None) -> list[str]:
    """Mark done for Snakemake the up-to-date stages of ``dvc_yaml`` whose outputs changed
    since the last look (all of them at the first look), and the up-to-date stages downstream
    of them. When dvc.lock changed (a checkout, a commit), the other up-to-date stages get
    Snakemake's records anew too, as the lock may record other settings and code than those,
    with their outputs' times put back: outputs Snakemake made from them since must not look
    older than their inputs. Return the stages marked, in the pipeline's order."""
    root = Path(root)
    stages = _load(root / dvc_yaml)["stages"]
    state = _state_file(root, dvc_yaml)
    before = json.loads(state.read_text()) if state.is_file() else None
    now = look(root, dvc_yaml, stages)
    if now == before:
        return []
    fresh = up_to_date_stages(stages, dvc_changed_stages(root, dvc_yaml))
    moved = set(fresh) if before is None else _changed_stages(stages, before, now) & set(fresh)
    touched = downstream(stages, moved, fresh) if moved else []
    relocked = before is not None and before.get("lock") != now["lock"]
    recorded = [name for name in fresh if name not in touched] if relocked else []
    if touched or recorded:
        mark_done(root, dvc_yaml, stages, touched + recorded, snakefile)
        for name in recorded:
            for out in outputs(stages[name]):
                path = root / out
                for f in [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]:
                    seen = now["files"].get(posix(f.relative_to(root)))
                    if seen is not None and f.is_file():
                        os.utime(f, ns=(f.stat().st_atime_ns, seen[1]))
    remember(root, dvc_yaml, stages)
    return [name for name in stages if name in touched or name in recorded]


def remember(root: Path | str, dvc_yaml: str, stages: dict | None = None) -> None:
    """Record what the pipeline's outputs look like now, as this tool's own doing: the
    workflow calls it when a run ends, so that outputs Snakemake wrote itself are not taken
    for ones DVC put in place."""
    root = Path(root)
    if stages is None:
        stages = _load(root / dvc_yaml)["stages"]
    with atomic_path(_state_file(root, dvc_yaml)) as tmp:
        tmp.write_text(json.dumps(look(root, dvc_yaml, stages)))


def pipeline_of(root: Path | str, configfile: str | os.PathLike) -> str | None:
    """The dvc.yaml (relative to ``root``) whose stages run ``configfile``, where ``root`` is
    a DVC repository that has it; else None."""
    root = Path(root).resolve()
    config = Path(os.path.abspath(configfile))
    if not (root / ".dvc").is_dir() or not config.is_relative_to(root):
        return None
    dvc_yaml = dvc_file(posix(config.relative_to(root)))
    return dvc_yaml if (root / dvc_yaml).is_file() else None


def follow_config(root: Path, dvc_yaml: str) -> bool:
    """Rewrite ``dvc_yaml`` from its config file when the config's runs changed (a sigma or a
    method added); True when it was rewritten."""
    configfile = parse_cmd(next(iter(_load(root / dvc_yaml)["stages"].values()))["cmd"])[1]
    text = render(load(root / configfile), configfile, dvc_yaml=dvc_yaml)
    if (root / dvc_yaml).read_text() == text:
        return False
    with atomic_path(root / dvc_yaml) as tmp:
        tmp.write_text(text)
    return True


def sync_workflow(configfile: str | os.PathLike, snakefile: str, log) -> str | None:
    """What the workflow runs as it starts (common.smk): sync the pipeline of ``configfile``
    in the working directory, if it has one, and return it; ``log``: Snakemake's logger. A
    failure is a warning: Snakemake then decides by itself, as without DVC."""
    if os.environ.get(NESTED) or os.environ.get("DVC_STAGE"):
        return None  # the nested snakemake, or a stage's command under `dvc repro`
    dvc_yaml = pipeline_of(".", configfile)
    if dvc_yaml is None or shutil.which(tool("dvc")) is None:
        return None
    try:
        if follow_config(Path("."), dvc_yaml):
            log.info(f"{dvc_yaml}: rewritten from its config, whose runs changed")
        marked = sync(".", dvc_yaml, snakefile=snakefile)
    except Exception as error:  # a convenience: it never stops the workflow
        log.warning(f"{dvc_yaml}: could not mark what dvc.lock vouches for as done "
                    f"({type(error).__name__}: {error}); Snakemake decides by itself")
        return None
    if marked:
        log.info(f"{dvc_yaml}: marked done for Snakemake, as dvc.lock records them: "
                 f"{', '.join(marked)}")
    return dvc_yaml
