"""Certify a dataset into a resumable TSV; split the work into shards and merge them.

Files for an output ``X.tsv``:

- ``X.tsv.partial``: rows appended (flushed and fsync'd) as images finish. A half-written last
  line, left by a kill, is dropped on resume.
- ``X.tsv.partial.meta.json``: the run's settings, written before the first row; a resume with
  different settings is a ``ValueError`` naming the differing key.
- ``X.tsv.meta.json``: the same settings plus ``rows``, written when the run completes.
- ``X.tsv``: the finished table, renamed from ``X.tsv.partial`` only once every image is done, so
  its existence is the "complete" marker.

The TSV has Cohen et al.'s columns ``idx label predict radius correct`` followed by
``n0 n nA pA_lower n_used``: nA of the n_used estimation samples drawn voted for the selected
class (n_used is n for the cohen method; the adaptive one stops early, never past its n_max).
``radius`` and ``pA_lower`` are written with ``repr(float)`` (full precision); ``predict`` is
-1 for ABSTAIN. Rows are sorted by ``idx``. Cohen et al.'s ``time`` column is left out so that
a rerun writes the same bytes; the job's log has the speed.

Settings recorded (and checked on resume): sigma, n0, n, alpha, seed, num_classes, noise_chunk,
the ``precision`` the base classifier ran at (fp32, bf16 or fp16: ``runtime.amp`` resolved on
the device), the number and sha256 of the full index list, the shard, the caller's ``config``
(e.g. the model fingerprint) and the certification ``method``: its name and parameters. The
batch size is NOT a setting: noise is drawn in fixed chunks per image, so it only changes speed
(it is recorded under ``info``, with ``compile``, the device and torch version; like the batch
size, torch.compile picks other kernels for the same computation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from dmae.certify.methods import DEFAULT_METHOD, build_certifier
from dmae.certify.smooth import DEFAULT_NOISE_CHUNK, Certificate
from dmae.io import atomic_path, read_json, write_json
from dmae.layout import meta_path, partial_path

log = logging.getLogger(__name__)

COLUMNS = ("idx", "label", "predict", "radius", "correct", "n0", "n", "nA", "pA_lower",
           "n_used")
HEADER = "\t".join(COLUMNS) + "\n"
FORMAT = "dmae-certify-tsv/3"  # 2: no time column; 3: n_used, the method's parameters


@dataclass(frozen=True)
class CertifyStatus:
    """Where a ``certify_dataset`` call left its output."""

    tsv: Path  # the final TSV (exists only when complete)
    complete: bool
    done: int  # images certified so far in this job (shard)
    total: int  # images this job (shard) has to certify


# ---------------------------------------------------------------------------------------------
# Paths and settings
# ---------------------------------------------------------------------------------------------


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


def normalize_shard(shard: tuple[int, int] | None) -> list[int] | None:
    """``(i, k)`` as a list, or None for the whole set; ``(0, 1)`` is the whole set."""
    if shard is None:
        return None
    try:
        i, k = (int(v) for v in shard)
    except (TypeError, ValueError) as err:
        raise ValueError(f"shard must be a pair (i, k), got {shard!r}") from err
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"shard (i, k) needs k >= 1 and 0 <= i < k, got {shard!r}")
    return None if k == 1 else [i, k]


def make_settings(*, sigma: float, n0: int, n: int, alpha: float, seed: int, num_classes: int,
                  noise_chunk: int, precision: str, indices: Sequence[int],
                  shard: list[int] | None, config: dict | None, method: dict) -> dict[str, Any]:
    """The settings that determine a TSV's contents (JSON-normalized for comparison)."""
    settings = {
        "format": FORMAT,
        "sigma": float(sigma),
        "n0": int(n0),
        "n": int(n),
        "alpha": float(alpha),
        "seed": int(seed),
        "num_classes": int(num_classes),
        "noise_chunk": int(noise_chunk),
        "precision": precision,
        "indices": {"count": len(indices), "sha256": indices_digest(indices)},
        "shard": shard,
        "config": config or {},
        "method": method,
    }
    try:
        return json.loads(json.dumps(settings))
    except TypeError as err:
        raise ValueError(f"config must be JSON-serializable: {err}") from err


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


def check_settings(path: Path, settings: dict) -> dict:
    """Read the meta sidecar ``path`` and raise ValueError naming every key that differs."""
    if not path.is_file():
        raise ValueError(f"{path} is missing: cannot tell which settings made "
                         f"{path.name.removesuffix('.meta.json')}; delete it to start over")
    meta = read_json(path)
    diffs = settings_differences(meta.get("settings", {}), settings)
    if diffs:
        raise ValueError(f"{path}: existing run has different settings ({'; '.join(diffs)}); "
                         "delete its files to start over or use another output path")
    return meta


# ---------------------------------------------------------------------------------------------
# TSV rows
# ---------------------------------------------------------------------------------------------


def format_row(idx: int, label: int, n0: int, n: int, cert: Certificate) -> str:
    correct = int(cert.prediction == label)
    return (f"{idx}\t{label}\t{cert.prediction}\t{float(cert.radius)!r}\t{correct}\t{n0}\t"
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
    """A finished certification TSV as a DataFrame (radius and pA_lower as float64)."""
    path = Path(path)
    if not path.is_file():
        partial = partial_path(path)
        hint = f" (only {partial.name} exists: the run is not complete)" if partial.exists() else ""
        raise FileNotFoundError(f"{path}: no such file{hint}")
    df = pd.read_csv(path, sep="\t", dtype={"radius": "float64", "pA_lower": "float64"})
    missing = [c for c in ("idx", "label", "predict", "radius", "correct") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return df


# ---------------------------------------------------------------------------------------------
# Model check
# ---------------------------------------------------------------------------------------------


def check_model(model: torch.nn.Module, image: torch.Tensor, num_classes: int,
                device: torch.device) -> None:
    """One forward pass on one clean image; ValueError naming the shapes when they do not fit."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"dataset images must be tensors [C,H,W], got {shape}")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"dataset images must lie in [0,1] (noise is added before "
                         f"normalization), got values in [{lo:.4g}, {hi:.4g}]")
    batch = image.unsqueeze(0).to(device, torch.float32)
    try:
        with torch.inference_mode():
            logits = model.eval()(batch)
    except Exception as err:  # any failure here means the model does not take this input
        raise ValueError(f"model failed on input of shape {list(batch.shape)}: {err}") from err
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (1, num_classes):
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model maps input {list(batch.shape)} to output {shape}, expected "
                         f"logits [1, {num_classes}] (num_classes={num_classes})")


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


def _sync_write(fh, text: str) -> None:
    fh.write(text)
    fh.flush()
    os.fsync(fh.fileno())


def _open_partial(partial: Path, settings: dict, info: dict, todo: Sequence[int]
                  ) -> dict[int, str]:
    """Check or start ``partial`` and its meta; return the rows already done."""
    pmeta = meta_path(partial)
    if partial.exists():
        check_settings(pmeta, settings)
        rows = read_rows(partial, repair=True)
        unexpected = sorted(set(rows) - set(todo))
        if unexpected:
            raise ValueError(f"{partial}: holds images not in this job, e.g. {unexpected[:5]}")
        if rows:
            log.info("%s: resuming, %d of %d images already done", partial, len(rows), len(todo))
        if not rows and partial.stat().st_size == 0:
            partial.write_text(HEADER)
        return rows
    write_json(pmeta, {"settings": settings, "info": info})
    with open(partial, "w") as fh:
        _sync_write(fh, HEADER)
    return {}


def _finish(partial: Path, out_tsv: Path, settings: dict, info: dict, todo: Sequence[int]) -> None:
    """Check the partial TSV covers exactly ``todo`` in order, then rename it onto ``out_tsv``."""
    rows = read_rows(partial)
    if list(rows) != list(todo):
        raise ValueError(f"{partial}: rows do not match the images of this job")
    write_json(meta_path(out_tsv), {"settings": settings, "info": info, "rows": len(rows)})
    os.replace(partial, out_tsv)
    meta_path(partial).unlink(missing_ok=True)


def certify_dataset(model: torch.nn.Module, dataset, indices: Iterable[int], sigma: float, *,
                    n0: int, n: int, alpha: float, batch_size: int, seed: int,
                    out_tsv: str | os.PathLike, num_classes: int,
                    device: torch.device | str | None = None,
                    shard: tuple[int, int] | None = None, config: dict | None = None,
                    progress: bool = True, max_images: int | None = None,
                    noise_chunk: int = DEFAULT_NOISE_CHUNK, method: str = DEFAULT_METHOD,
                    method_options: dict | None = None, amp: str = "auto",
                    compile: bool | str = False) -> CertifyStatus:
    """CERTIFY every image ``dataset[i]`` for i in ``indices`` (or this job's shard of them).

    ``dataset[i]`` returns ``(image in [0,1] as [C,H,W] tensor, label)``. ``indices`` are
    certified in sorted order; ``shard=(i, k)`` takes every k-th of them starting at position i.
    Each image's noise comes from its own generator seeded by ``(seed, idx)``, so the rows do not
    depend on sharding, resuming or ``batch_size``. ``config`` (JSON-serializable, e.g. a model
    fingerprint) is stored with the settings. ``max_images`` stops after that many newly
    certified images (leaving a resumable ``.partial``). ``method`` names the certifier
    (``CERTIFIERS``) and ``method_options`` are its settings beyond n0, n and alpha (e.g. the
    adaptive method's ``radii``). The model is moved to ``device`` (default: CUDA when
    available) and put in eval mode. ``amp`` and ``compile`` take the values of
    ``runtime.amp`` and ``runtime.compile``: amp "auto" is fp32 on the CPU and bf16 on CUDA
    (``dmae.precision.resolve_precision``), compile "auto" compiles on CUDA only.

    Returns a :class:`CertifyStatus`; the TSV at ``out_tsv`` exists only once complete.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    certifier = build_certifier(method, model, num_classes, sigma, n0=n0, n=n, alpha=alpha,
                                batch_size=batch_size, device=device, noise_chunk=noise_chunk,
                                amp=amp, compile=compile, **(method_options or {}))
    if max_images is not None and max_images < 0:
        raise ValueError(f"max_images must be >= 0, got {max_images}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    all_indices = normalize_indices(indices)
    shard_spec = normalize_shard(shard)
    todo = all_indices[shard_spec[0]::shard_spec[1]] if shard_spec else all_indices
    if max(all_indices) >= len(dataset):
        raise ValueError(f"index {max(all_indices)} is out of range for a dataset of "
                         f"{len(dataset)} images")
    seed = int(seed)
    settings = make_settings(sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed,
                             num_classes=num_classes, noise_chunk=noise_chunk,
                             precision=certifier.precision, indices=all_indices,
                             shard=shard_spec, config=config, method=certifier.parameters())
    info = {"batch_size": batch_size, "compile": certifier.compiled, "device": str(device),
            "torch": torch.__version__}

    out_tsv = Path(out_tsv)
    if out_tsv.exists():
        check_settings(meta_path(out_tsv), settings)
        log.info("%s: already complete", out_tsv)
        return CertifyStatus(out_tsv, True, len(todo), len(todo))

    model = model.to(device).eval()
    if todo:
        check_model(model, dataset[todo[0]][0], num_classes, device)
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out_tsv)
    done = _open_partial(partial, settings, info, todo)
    remaining = [i for i in todo if i not in done]
    if max_images is not None:
        remaining = remaining[:max_images]
    start = time.perf_counter()
    with open(partial, "a") as fh:
        for idx in tqdm(remaining, desc=f"certify sigma={sigma:g}", unit="img",
                        initial=len(done), total=len(done) + len(remaining),
                        disable=not progress,
                        mininterval=1.0 if sys.stderr.isatty() else 25.0):
            image, label = dataset[idx]
            cert = certifier.certify(image, certifier.generator(seed, idx), label=int(label))
            _sync_write(fh, format_row(idx, int(label), n0, n, cert))
    if remaining:
        seconds = time.perf_counter() - start
        log.info("certified %d images in %.1f s (%.3f s an image)", len(remaining), seconds,
                 seconds / len(remaining))
    finished = len(done) + len(remaining)
    if finished < len(todo):
        log.info("%s: stopped after %d of %d images", partial, finished, len(todo))
        return CertifyStatus(out_tsv, False, finished, len(todo))
    _finish(partial, out_tsv, settings, info, todo)
    log.info("%s: complete (%d images)", out_tsv, len(todo))
    return CertifyStatus(out_tsv, True, len(todo), len(todo))


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
