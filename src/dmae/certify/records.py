"""A certification's files: the TSV format, its settings sidecar, and the merge of shards.

Reading and merging them loads no torch (the report and the merge jobs start in a fraction of
a second); ``dmae.certify.run`` writes them. Files for an output ``X.tsv``:

- ``X.tsv.partial``: rows appended (flushed and fsync'd) as images finish. A half-written last
  line, left by a kill, is dropped on resume.
- ``X.tsv.partial.meta.json``: the run's settings, written before the first row; a resume with
  different settings is a ``ValueError`` naming the differing key.
- ``X.tsv.meta.json``: the same settings plus ``rows``, written when the run completes.
- ``X.tsv``: the finished table, renamed from ``X.tsv.partial`` only once every image is done, so
  its existence is the "complete" marker.

The TSV has Cohen et al.'s columns ``idx label predict radius correct`` followed by
``n0 n nA pA_lower n_used``: n0 selection samples were drawn (the setting n0 for the cohen
method; the adaptive one may stop selecting sooner), and nA of the n_used estimation samples
drawn voted for the selected class (n_used is n for the cohen method; the adaptive one stops
early, never past its n_max). ``radius`` and ``pA_lower`` are written with ``repr(float)``
(full precision); ``predict`` is -1 for ABSTAIN and -2 (MISMATCH) for an image stopped after
selection because the selected class is not its label (``correct`` 0: misclassified). Rows
are sorted by ``idx``. Cohen et al.'s ``time`` column is left out so that a rerun writes the
same bytes; the job's log has the speed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dmae.certify.base import MISMATCH
from dmae.io import atomic_path, read_json, write_json
from dmae.layout import meta_path, partial_path

if TYPE_CHECKING:
    from dmae.certify.base import Certificate

log = logging.getLogger(__name__)

COLUMNS = ("idx", "label", "predict", "radius", "correct", "n0", "n", "nA", "pA_lower",
           "n_used")
HEADER = "\t".join(COLUMNS) + "\n"
# 2: no time column; 3: n_used, the method's parameters. A MISMATCH row (predict -2) and
# fewer selection samples than the setting n0 come from a method that stops early; they keep
# format 3, so that Cohen's certifications keep their bytes and their resumable partials.
FORMAT = "dmae-certify-tsv/3"


def normalize_indices(indices: Iterable[int]) -> list[int]:
    """Sorted list of distinct, non-negative integer indices (duplicates are an error)."""
    values = [int(i) for i in indices]
    if not values:
        raise ValueError("no indices to certify")
    if len(set(values)) != len(values):
        raise ValueError("indices contain duplicates")
    if min(values) < 0:
        raise ValueError(f"indices must be >= 0, got {min(values)}")
    return sorted(values)


def indices_digest(indices: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        flat: dict[str, Any] = {}
        for key, value in obj.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): obj}


def settings_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two settings dicts, as readable strings."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    return [f"{key}: {a.get(key, missing)!r} in the file, {b.get(key, missing)!r} now"
            .replace(repr(missing), "<absent>")
            for key in sorted(set(a) | set(b)) if a.get(key, missing) != b.get(key, missing)]


# ---------------------------------------------------------------------------------------------
# TSV rows
# ---------------------------------------------------------------------------------------------


def format_row(idx: int, label: int, n0: int, n: int, cert: Certificate) -> str:
    correct = int(cert.prediction == label)
    drawn = n0 if cert.n0_used is None else cert.n0_used
    return (f"{idx}\t{label}\t{cert.prediction}\t{float(cert.radius)!r}\t{correct}\t{drawn}\t"
            f"{n}\t{cert.n_a}\t{float(cert.p_a_lower)!r}\t{cert.n_used}\n")


def _row_index(line: str, where: str) -> int:
    fields = line.rstrip("\n").split("\t")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"{where}: expected {len(COLUMNS)} tab-separated fields, "
                         f"got {len(fields)}")
    try:
        int(fields[1]), int(fields[2]), float(fields[3]), int(fields[4]), float(fields[8]), \
            int(fields[9])
        return int(fields[0])
    except ValueError as err:
        raise ValueError(f"{where}: malformed row ({err})") from err


def read_rows(path: Path, *, repair: bool = False) -> dict[int, str]:
    """Rows of a certification TSV keyed by idx (each line kept verbatim, newline included).

    With ``repair``, a last line without its newline (a write cut short by a kill) is cut off
    the file; otherwise it is an error. Duplicate or malformed rows are errors.
    """
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        if not repair:
            raise ValueError(f"{path}: last line is incomplete")
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a half-written last line (%d bytes)", path, len(data) - cut)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        data = data[:cut]
    # split on "\n" only (str.splitlines would also split on other control characters)
    lines = [line + "\n" for line in data.decode().split("\n")[:-1]]
    if not lines:
        return {}
    if lines[0] != HEADER:
        raise ValueError(f"{path}: header {lines[0].strip()!r} is not {HEADER.strip()!r}")
    rows: dict[int, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        idx = _row_index(line, f"{path}:{number}")
        if idx in rows:
            raise ValueError(f"{path}:{number}: image {idx} appears twice")
        rows[idx] = line
    return rows


def read_certification(path: str | os.PathLike) -> pd.DataFrame:
    """A finished certification TSV as a DataFrame (radius and pA_lower as float64).

    Rows of an older format that stopped on a mismatch (ABSTAIN with no estimation sample,
    by a method with ``stop_on_mismatch``) are read with their own status, MISMATCH."""
    path = Path(path)
    if not path.is_file():
        partial = partial_path(path)
        hint = f" (only {partial.name} exists: the run is not complete)" if partial.exists() else ""
        raise FileNotFoundError(f"{path}: no such file{hint}")
    df = pd.read_csv(path, sep="\t", dtype={"radius": "float64", "pA_lower": "float64"})
    missing = [c for c in ("idx", "label", "predict", "radius", "correct") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    if "n_used" in df.columns and _stopped_on_mismatch_as_abstain(path):
        df.loc[(df["predict"] == -1) & (df["n_used"] == 0), "predict"] = MISMATCH
    return df


def _stopped_on_mismatch_as_abstain(path: Path) -> bool:
    """Whether ``path`` was written by a method that stops on a mismatch, whose rows may
    record one the way earlier versions did: ABSTAIN with no estimation sample (no other
    row has n_used 0: an abstention comes after estimation)."""
    sidecar = meta_path(path)
    if not sidecar.is_file():
        return False
    settings = read_json(sidecar).get("settings", {})
    return bool((settings.get("method") or {}).get("stop_on_mismatch"))


# ---------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------


def merge_shards(shard_tsvs: Sequence[str | os.PathLike], out_tsv: str | os.PathLike,
                 expected_indices: Iterable[int]) -> Path:
    """Merge complete shard TSVs into ``out_tsv`` (rows sorted by idx), atomically.

    Checks that every shard is complete, that all were made with the same settings (apart from
    the shard) over ``expected_indices``, and that their rows are disjoint and cover exactly
    ``expected_indices``. The result equals an unsharded run byte for byte, apart from timing.
    """
    if not shard_tsvs:
        raise ValueError("no shard TSVs to merge")
    expected = normalize_indices(expected_indices)
    merged: dict[int, str] = {}
    settings: dict | None = None
    for tsv in map(Path, shard_tsvs):
        if not tsv.is_file():
            state = "incomplete" if partial_path(tsv).exists() else "missing"
            raise ValueError(f"shard {tsv} is {state}")
        meta = read_json(meta_path(tsv))
        shard_settings = dict(meta["settings"], shard=None)
        if settings is None:
            settings = shard_settings
        elif diffs := settings_differences(settings, shard_settings):
            raise ValueError(f"shard {tsv} was made with other settings: {'; '.join(diffs)}")
        rows = read_rows(tsv)
        overlap = sorted(set(rows) & set(merged))
        if overlap:
            raise ValueError(f"shard {tsv} overlaps earlier shards on images {overlap[:5]}")
        merged.update(rows)
    assert settings is not None
    if settings["indices"]["sha256"] != indices_digest(expected):
        raise ValueError("shards were made for a different index list than expected_indices")
    missing, extra = sorted(set(expected) - set(merged)), sorted(set(merged) - set(expected))
    if missing or extra:
        raise ValueError(f"shards do not cover the expected indices: missing {missing[:5]} "
                         f"({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    out_tsv = Path(out_tsv)
    info = {"merged_from": [Path(t).name for t in shard_tsvs]}
    write_json(meta_path(out_tsv), {"settings": settings, "info": info, "rows": len(merged)})
    with atomic_path(out_tsv) as tmp:
        tmp.write_text(HEADER + "".join(merged[i] for i in expected))
    return out_tsv
