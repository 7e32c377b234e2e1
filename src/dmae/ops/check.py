"""``make check``: a finished run against the committed reference, on a CPU of either vendor.

The pinned CPU kernels write the same bytes on CPUs of one vendor, not across vendors
(dmae.reproducibility). So a run is checked twice:

- every table cell against the tables committed at HEAD (``dmae compare``): identical,
  within its 95% interval, or beyond it, which fails the check;
- for a config whose DVC pipeline is committed, every output's bytes against the reference of
  this machine's CPU vendor: dvc.lock (``dvc status``) where the committed run was made on this
  vendor (its run_info.json says which; ``dvc diff`` against HEAD), else
  ``layout.reference_hashes(cfg, vendor)``, the md5 of every output as a run on that vendor
  wrote them for the same dvc.lock (``dmae check --record`` writes it).
  Where neither exists, the table comparison is the check, and it says so.
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
from dmae.config import load
from dmae.io import write_json
from dmae.ops.dvc.stages import posix
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


def lock_outputs(root: Path, dvc_yaml: str) -> str:
    """A digest of the outputs the committed dvc.lock (at HEAD) records: a reference of
    another vendor describes the run of that lock only."""
    lock = posix(Path(dvc_yaml).with_suffix(".lock"))
    stages = yaml.safe_load(_git(root, "show", f"HEAD:{lock}"))["stages"]
    outs = sorted(f"{out['path']} {out['md5']}" for stage in stages.values()
                  for out in stage.get("outs", []))
    return hashlib.sha256("\n".join(outs).encode()).hexdigest()[:16]


def _differ_from_lock(root: Path, dvc_yaml: str) -> list[str]:
    """The outputs whose bytes differ from what the committed dvc.lock (at HEAD) records
    (`dvc diff` hashes the workspace; it needs none of them in DVC's cache)."""
    proc = subprocess.run([tool("dvc"), "diff", "--json", "--targets", dvc_yaml], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc diff failed in {root}:\n{proc.stdout}{proc.stderr}")
    found = json.loads(proc.stdout or "{}")
    return sorted(f"{kind}: {entry['path']}" for kind in ("modified", "deleted", "added")
                  for entry in found.get(kind, []))


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
    """Compare the finished run of ``configfile`` with the committed one; print what was
    found; 0 when it reproduces, 1 when not."""
    root, cfg = Path(root), load(Path(root) / configfile)
    results = layout.results_dir(cfg)
    with tempfile.TemporaryDirectory() as scratch:
        reference = committed_tables(root, results, Path(scratch))
        comparison = compare_runs(reference, root / results)
        print(format_comparison(comparison), end="")
    if comparison.beyond_uncertainty:
        return 1
    dvc_yaml = pipeline_of(root, root / configfile)
    if dvc_yaml is None:
        print(f"check: {configfile} has no committed DVC pipeline, so only its tables count")
        return 0
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
