"""Prepare a dataset into one uniform, loader-friendly form under ``<prepared_root>/<name>/``.

Array datasets (Fashion-MNIST, CIFAR-10) become ``{split}_images.npy`` (uint8, N,H,W,C) and
``{split}_labels.npy`` (int64); ImageNet becomes ``{split}.csv`` (``path,label``, paths
relative to the ImageNet root recorded in the manifest). Splits are ``train`` and ``val``
(carved from the official training set with a fixed seed, for model selection) and ``test``
(the official test set, kept for certification only). ``manifest.json`` records sources
with checksums, counts and settings. Everything is written to a temporary folder renamed
at the end, so an interrupted run leaves nothing that looks complete.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path, read_json, sha256_file, write_json
from ..layout import MANIFEST
from .base import Dataset, spec_identity
from .errors import DataError
from .registry import get_dataset, with_expected_classes
from .sources import Loaded, Locations

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


def prepare_dataset(
    name: str,
    prepared_root: Path,
    raw_dir: Path,
    *,
    val_size: int,
    split_seed: int = 0,
    source_dir: Path | None = None,
    download_url: str | None = None,
    imagenet_dir: Path | None = None,
    expected_classes: int | None = None,
    spec: Dataset | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Prepare dataset ``name`` into ``prepared_root / name`` and return that folder.

    Sources: ``source_dir`` when given (the only place looked at), otherwise the spec's
    system folders (Debian's Fashion-MNIST), then files already in ``raw_dir``, then a
    download from ``download_url`` (a base URL; default: the spec's) into ``raw_dir``.
    ImageNet is indexed in place from ``imagenet_dir`` (or ``source_dir``) and must have
    ``expected_classes`` classes (default: the spec's, 1000). ``spec`` replaces the default
    spec of ``name`` (tests use it to run on small fixture files). ``progress`` shows bars on
    stderr while downloading, extracting and indexing.

    A folder whose manifest matches the requested settings is kept unless ``force``.
    Raises DataError, naming the file and what was expected, for any bad or missing input;
    nothing partial is left behind.
    """
    dataset = _resolve_spec(name, spec, expected_classes)
    prepared_root = Path(prepared_root)
    out = prepared_root / name
    _check_val_size(val_size)
    where = Locations(
        raw_dir=Path(raw_dir),
        scratch_dir=prepared_root,
        source_dir=_opt_path(source_dir),
        download_url=download_url,
        imagenet_dir=_opt_path(imagenet_dir),
        progress=progress,
    )

    settings = _settings(name, dataset, val_size, split_seed, dataset.source_settings(where))
    if not force and _is_up_to_date(out, settings):
        log.info("%s is up to date; not preparing again", out)
        return out

    _write_prepared(out, dataset, dataset.load(where), settings, val_size, split_seed)
    log.info("prepared %s in %s", name, out)
    return out


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices into ``n`` training items: ``val_size`` drawn at random.

    Deterministic for a seed (numpy's PCG64 generator); the two sets are disjoint and cover
    all ``n`` items.
    """
    _check_val_size(val_size)
    if val_size >= n:
        raise DataError(f"val_size={val_size} must be smaller than the training set ({n} items)")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]).astype(np.int64), np.sort(order[:val_size]).astype(np.int64)


# ---------------------------------------------------------------------------- settings


def _resolve_spec(name: str, spec: Dataset | None, expected_classes: int | None) -> Dataset:
    default = get_dataset(name)
    if spec is None:
        spec = default
    elif not isinstance(spec, type(default)):
        raise DataError(f"spec for {name!r} must be a {type(default).__name__}, got {spec!r}")
    return with_expected_classes(spec, expected_classes)


def _opt_path(path: Path | None) -> Path | None:
    return Path(path) if path is not None else None


def _check_val_size(val_size: int) -> None:
    if isinstance(val_size, bool) or not isinstance(val_size, int | np.integer) or val_size < 0:
        raise DataError(f"val_size must be a non-negative integer, got {val_size!r}")


def _settings(name, spec, val_size, split_seed, source_settings) -> dict[str, Any]:
    settings = {
        "dataset": name,
        "val_size": int(val_size),
        "split_seed": int(split_seed),
        "spec": spec_identity(spec),
        **source_settings,
    }
    return json.loads(json.dumps(settings))  # normalise to what the manifest reads back


def _is_up_to_date(out: Path, settings: dict[str, Any]) -> bool:
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        manifest = read_json(manifest_path)
    except ValueError:
        return False
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("settings") != settings:
        return False
    return all((out / f).is_file() for f in manifest.get("files", {}))


# ---------------------------------------------------------------------------- writing


def _write_prepared(out, spec, loaded: Loaded, settings, val_size, split_seed) -> None:
    is_index = isinstance(loaded.train, list)
    n_train = len(loaded.train) if is_index else len(loaded.train[1])
    train_idx, val_idx = split_indices(n_train, val_size, split_seed)
    if is_index:
        splits = {
            "train": [loaded.train[i] for i in train_idx],
            "val": [loaded.train[i] for i in val_idx],
            "test": loaded.test,
        }
        labels = {k: np.array([lab for _, lab in v], dtype=np.int64) for k, v in splits.items()}
    else:
        images, labs = loaded.train
        splits = {
            "train": (images[train_idx], labs[train_idx]),
            "val": (images[val_idx], labs[val_idx]),
            "test": loaded.test,
        }
        labels = {k: v[1] for k, v in splits.items()}

    num_classes = len(loaded.class_names)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "dataset": settings["dataset"],
        "storage": "image_index" if is_index else "arrays",
        "splits": list(SPLITS),
        "counts": {k: int(len(v)) for k, v in labels.items()},
        "class_counts": {
            k: np.bincount(v, minlength=num_classes).tolist() for k, v in labels.items()
        },
        "num_classes": num_classes,
        "class_names": loaded.class_names,
        # Shape of one item as load_split yields it (C,H,W); None: ImageNet sizes vary.
        "image_shape": None if is_index else _chw(spec.image_shape),
        "val_size": int(val_size),
        "split_seed": int(split_seed),
        "sources": loaded.sources,
        "settings": settings,
        **loaded.extra,
    }
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for split, data in splits.items():
            if is_index:
                _write_index(tmp / f"{split}.csv", data)
            else:
                np.save(tmp / f"{split}_images.npy", np.ascontiguousarray(data[0]))
                np.save(tmp / f"{split}_labels.npy", data[1].astype(np.int64))
        # Which training items went to val, in the official order (traceability).
        np.save(tmp / "val_indices.npy", val_idx)
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST, manifest)


def _write_index(path: Path, entries: list[tuple[str, int]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(entries)


def _chw(hwc: tuple[int, int, int]) -> list[int]:
    height, width, channels = hwc
    return [channels, height, width]


# Read back by the stages that use a prepared folder.
def read_manifest(prepared_dir: Path) -> dict[str, Any]:
    """The manifest of a prepared folder; DataError if missing or of another format."""
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found; prepare the dataset first (dmae prepare)")
    manifest = read_json(path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {manifest.get('format_version')!r}, expected "
            f"{FORMAT_VERSION}; prepare the dataset again"
        )
    return manifest


def manifest_hash(prepared_dir: Path) -> str:
    """sha256 of ``manifest.json`` (recorded in checkpoints for traceability)."""
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found; prepare the dataset first")
    return sha256_file(path)
