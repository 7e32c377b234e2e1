"""``make check``: a finished run against the committed reference, on a CPU of either vendor.

The pinned CPU kernels write the same bytes on CPUs of one vendor, not across vendors
(dmae.reproducibility). So a run is checked twice:

- every table cell against the tables committed at HEAD (``dmae compare``): identical,
  within its 95% interval, or beyond it, which fails the check;
- for a config whose DVC pipeline is committed, every output's bytes against the reference of
  this machine's CPU vendor: the dvc.lock committed at HEAD where the committed run was made on
  this vendor (its run_info.json says which), else
  ``layout.reference_hashes(cfg, vendor)``, the md5 of every output as a run on that vendor
  wrote them for the same dvc.lock (``dmae check --record`` writes it).
  Where neither exists, the table comparison is the check, and it says so.

A seed study (``<name>-seeds``, dmae.report.readme) has no pipeline of its own; its runs whose
settings equal a run of its base config (seed 0: the same seeds) are checked against the
base's bytes of this vendor instead (``seed_zero_differences``).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import yaml

from dmae import layout
from dmae.config import finetune_settings, load, pretrain_settings
from dmae.io import write_json
from dmae.ops.dvc.stages import committed_pipelines, posix
from dmae.ops.dvc.sync import outputs, pipeline_of, tool
from dmae.report.compare import compare_runs, format_comparison
from dmae.report.run_info import run_info_path
from dmae.reproducibility import cpu_vendor, other_vendor_note


def _git(root: Path, *args: str) -> bytes:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {root}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def committed_tables(root: Path, results: Path, dest: Path) -> Path:
    """The run's tables as committed at HEAD, extracted under ``dest``; return that folder."""
    tables = posix(results / "tables")
    if not _git(root, "ls-tree", "--name-only", "HEAD", f"{tables}/").strip():
        raise ValueError(f"no tables of {results} are committed (HEAD has no {tables}/): "
                         "there is no reference run to check against")
    archive = _git(root, "archive", "--format=tar", "HEAD", tables)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest / results / "tables"


def committed_run_info(root: Path, cfg: dict) -> dict:
    """The committed run's run_info.json (at HEAD), {} where there is none."""
    try:
        return json.loads(_git(root, "show", f"HEAD:{posix(run_info_path(cfg))}"))
    except RuntimeError:
        return {}


def output_files(root: Path, dvc_yaml: str) -> list[str]:
    """Every file the pipeline's stages declare (folders expanded), relative to ``root``."""
    stages = yaml.safe_load((root / dvc_yaml).read_text())["stages"]
    files = []
    for stage in stages.values():
        for out in outputs(stage):
            path = root / out
            found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            files += [posix(p.relative_to(root)) for p in found]
    return files


def md5(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock_outs(root: Path, dvc_yaml: str) -> dict[str, str]:
    """Every output the committed dvc.lock (at HEAD) records: path -> md5 (a folder's ends
    in ".dir")."""
    lock = posix(Path(dvc_yaml).with_suffix(".lock"))
    stages = yaml.safe_load(_git(root, "show", f"HEAD:{lock}"))["stages"]
    return {out["path"]: out["md5"] for stage in stages.values()
            for out in stage.get("outs", [])}


def _lock_files(root: Path, dvc_yaml: str) -> dict[str, str]:
    """The file outputs of the committed dvc.lock: path -> md5 (folders left out: theirs is
    DVC's digest of a listing, not of bytes)."""
    return {path: md5 for path, md5 in _lock_outs(root, dvc_yaml).items()
            if not md5.endswith(".dir")}


def lock_outputs(root: Path, dvc_yaml: str) -> str:
    """A digest of the outputs the committed dvc.lock (at HEAD) records: a reference of
    another vendor describes the run of that lock only."""
    outs = sorted(f"{path} {md5}" for path, md5 in _lock_outs(root, dvc_yaml).items())
    return hashlib.sha256("\n".join(outs).encode()).hexdigest()[:16]


def _differ_from_lock(root: Path, dvc_yaml: str) -> list[str]:
    """The outputs whose bytes differ from what the committed dvc.lock (at HEAD) records.

    Files are hashed here: `dvc diff` skips outputs with ``cache: false`` (the tables and
    figures). Folders go through `dvc diff`, which alone computes DVC's digest of their
    listing; it hashes the workspace and needs none of them in DVC's cache.
    """
    differ = {path: "modified" if (root / path).is_file() else "deleted"
              for path, digest in _lock_files(root, dvc_yaml).items()
              if md5(root / path) != digest}
    folders = [path for path, digest in _lock_outs(root, dvc_yaml).items()
               if digest.endswith(".dir")]
    if folders:
        proc = subprocess.run([tool("dvc"), "diff", "--json", "--targets", *folders],
                              cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"dvc diff failed in {root}:\n{proc.stdout}{proc.stderr}")
        found = json.loads(proc.stdout or "{}")
        differ.update({entry["path"]: kind for kind in ("modified", "deleted", "added")
                       for entry in found.get(kind, [])})
    return sorted(f"{kind}: {path}" for path, kind in differ.items())


def vendor_hashes(root: Path, configfile: str, dvc_yaml: str) -> tuple[dict[str, str], str] | None:
    """The md5 of the committed run's outputs as a CPU of this machine's vendor writes them,
    and where they come from (dvc.lock, or the vendor's reference); None without either."""
    cfg = load(root / configfile)
    if committed_run_info(root, cfg).get("cpu_vendor") in (None, cpu_vendor()):
        return _lock_files(root, dvc_yaml), posix(Path(dvc_yaml).with_suffix(".lock"))
    path = layout.reference_hashes(cfg, cpu_vendor())
    if not (root / path).is_file():
        return None
    return json.loads((root / path).read_text())["md5"], posix(path)


def same_runs(study: dict, base: dict) -> list[tuple[Path, Path]]:
    """(study prefix, base prefix) of the output paths of every run of ``study`` whose
    settings, and its pretraining's, equal those of a run of ``base`` at the same sigma:
    the pretraining folder, the fine-tuning folder and the certification (``<sigma>``, which
    ``.tsv``, ``.tsv.meta.json`` and the shard folder extend)."""
    pairs: dict[Path, Path] = {}
    if study["dataset"] != base["dataset"] or study["certify"] != base["certify"]:
        return []
    base_runs = set(layout.runs(base))
    for model, method, sigma in layout.runs(study):
        settings = finetune_settings(study, model, method, float(sigma))
        for other in base["methods"]:
            if ((model, other, sigma) not in base_runs
                    or finetune_settings(base, model, other, float(sigma)) != settings):
                continue
            ours, theirs = study["methods"][method]["pretraining"], base["methods"][other][
                "pretraining"]
            if (ours is None) != (theirs is None) or (ours is not None and pretrain_settings(
                    study, model, ours) != pretrain_settings(base, model, theirs)):
                continue
            if ours is not None:
                pairs[layout.pretrain_dir(study, model, ours)] = layout.pretrain_dir(
                    base, model, theirs)
            pairs[layout.finetune_dir(study, model, method, sigma)] = layout.finetune_dir(
                base, model, other, sigma)
            pairs[layout.certify_tsv(study, model, method, sigma).with_suffix("")] = (
                layout.certify_tsv(base, model, other, sigma).with_suffix(""))
            break
    return list(pairs.items())


def seed_zero_differences(root: Path, study: dict, base: dict, expected: dict[str, str]
                          ) -> tuple[int, list[str]]:
    """How many of the base run's files (``expected``: their md5) the study's equal runs
    (``same_runs``) reproduce, and the study's files that differ or are missing. A training
    run's JSON record names its run, so it is left out; its weights and metrics count."""
    same, differ = 0, []
    trainings = {posix(layout.results_dir(base) / stage) for stage in ("pretrain", "finetune")}
    for ours, theirs in same_runs(study, base):
        prefix = posix(theirs)
        for path, digest in sorted(expected.items()):
            rest = path[len(prefix):]
            if not path.startswith(prefix) or rest[:1] not in (".", "/"):
                continue
            if path.endswith(".json") and any(path.startswith(t + "/") for t in trainings):
                continue
            if md5(root / (posix(ours) + rest)) == digest:
                same += 1
            else:
                differ.append(posix(ours) + rest)
    return same, differ


def _check_seed_zero(root: Path, study: dict) -> int:
    """Check a seed study's runs that equal its base config's against the base's bytes."""
    for configfile in committed_pipelines(root):
        base = load(root / configfile)
        if f"{base['name']}-seeds" != study["name"]:
            continue
        found = vendor_hashes(root, configfile, pipeline_of(root, root / configfile))
        if found is None:
            print(f"check: no {cpu_vendor()} bytes of {configfile}'s run are committed to "
                  "check the seed study's seed-0 runs against")
            return 0
        expected, source = found
        same, differ = seed_zero_differences(root, study, base, expected)
        for name in differ:
            print(f"  differs from {configfile}'s run ({source}), or is missing: {name}")
        if differ or not same:
            print(f"check: {len(differ)} of {same + len(differ)} files of the runs that "
                  f"repeat {configfile}'s differ from its bytes or are missing ({source})")
            return 1
        print(f"check: the {same} files of the runs that repeat {configfile}'s (seed 0) have "
              f"its bytes ({source})")
    return 0


def record(configfile: str, root: Path | str = ".") -> Path:
    """Write this run's output hashes as the reference of this machine's CPU vendor."""
    root, cfg = Path(root), load(Path(root) / configfile)
    dvc_yaml = pipeline_of(root, root / configfile)
    if dvc_yaml is None:
        raise ValueError(f"{configfile} has no committed DVC pipeline: there are no outputs "
                         "to record (only its tables are checked)")
    files = {f: md5(root / f) for f in output_files(root, dvc_yaml)}
    if missing := [f for f, digest in files.items() if digest is None]:
        raise FileNotFoundError(f"outputs missing, finish the run first: {', '.join(missing)}")
    vendor = cpu_vendor()
    path = layout.reference_hashes(cfg, vendor)
    info = json.loads((root / run_info_path(cfg)).read_text()) if (
        root / run_info_path(cfg)).is_file() else {}
    write_json(root / path, {"cpu_vendor": vendor, "machine": info.get("machine"),
                             "commit": info.get("commit"),
                             "dvc_lock_outputs": lock_outputs(root, dvc_yaml), "md5": files})
    return path


def check(configfile: str, root: Path | str = ".") -> int:
    """Compare the finished run of ``configfile`` with the committed one, its table cells
    and then its outputs' bytes (both, so that a moved number comes with the files that
    moved); print what was found; 0 when it reproduces, 1 when not."""
    root, cfg = Path(root), load(Path(root) / configfile)
    results = layout.results_dir(cfg)
    with tempfile.TemporaryDirectory() as scratch:
        reference = committed_tables(root, results, Path(scratch))
        comparison = compare_runs(reference, root / results)
        print(format_comparison(comparison), end="")
    same_bytes = _check_bytes(configfile, root, cfg) == 0
    return 0 if same_bytes and not comparison.beyond_uncertainty else 1


def _check_bytes(configfile: str, root: Path, cfg: dict) -> int:
    """Every output's md5 against the committed run's for this CPU vendor (or, for a seed
    study, its seed-0 runs against the base config's); 0 when they agree."""
    dvc_yaml = pipeline_of(root, root / configfile)
    if dvc_yaml is None:
        print(f"check: {configfile} has no committed DVC pipeline, so only its tables count")
        return _check_seed_zero(root, cfg)
    ours, theirs = cpu_vendor(), committed_run_info(root, cfg).get("cpu_vendor")
    lock = Path(dvc_yaml).with_suffix(".lock")
    if theirs in (None, ours):
        differ = _differ_from_lock(root, dvc_yaml)
        for line in differ:
            print(f"  {line}")
        if differ:
            print(f"check: {len(differ)} outputs differ from what {lock} records")
            return 1
        print(f"check: every output has the hash {lock} records")
        return 0
    path = layout.reference_hashes(cfg, ours)
    if not (root / path).is_file():
        print(f"check: {other_vendor_note({'cpu_vendor': theirs})} No reference of {ours} "
              f"bytes is committed ({path}; `dmae check --record` writes one).")
        return 0
    reference = json.loads((root / path).read_text())
    if reference.get("dvc_lock_outputs") != lock_outputs(root, dvc_yaml):
        print(f"check: {path} was recorded for the outputs of another {lock}: re-record it "
              f"on an {ours} CPU after a run at this commit (`dmae check --record`)")
        return 1
    expected = reference["md5"]
    files = sorted(set(expected) | set(output_files(root, dvc_yaml)))
    differ = [f for f in files if md5(root / f) != expected.get(f)]
    for name in differ:
        print(f"  differs from the {ours} reference: {name}")
    if differ:
        print(f"check: {len(differ)} of {len(files)} outputs differ from {path}")
        return 1
    print(f"check: every output has the hash the {ours} reference records ({path}; the "
          f"committed run was made on an {theirs} CPU)")
    return 0
