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
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_path, read_json, sha256_file, write_json
from . import cifar, idx, imagenet
from .archive import safe_extract
from .download import check_md5, download, join_url
from .errors import DataError
from .specs import (
    Cifar10Spec,
    DatasetSpec,
    FashionMnistSpec,
    ImageNetSpec,
    SourceFile,
    get_spec,
    spec_identity,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class _Loaded:
    """What a dataset loader hands to the writer."""

    train: Any  # (images, labels) arrays, or a list of (path, label)
    test: Any
    class_names: list[str]
    sources: list[dict[str, Any]]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    spec: DatasetSpec | None = None,
    force: bool = False,
) -> Path:
    """Prepare dataset ``name`` into ``prepared_root / name`` and return that folder.

    Sources: ``source_dir`` when given (the only place looked at), otherwise the spec's
    system folders (Debian's Fashion-MNIST), then files already in ``raw_dir``, then a
    download from ``download_url`` (a base URL; default: the spec's) into ``raw_dir``.
    ImageNet is indexed in place from ``imagenet_dir`` (or ``source_dir``) and must have
    ``expected_classes`` classes (default: the spec's, 1000). ``spec`` replaces the default
    spec of ``name`` (tests use it to run on small fixture files).

    A folder whose manifest matches the requested settings is kept unless ``force``.
    Raises DataError, naming the file and what was expected, for any bad or missing input;
    nothing partial is left behind.
    """
    spec = _resolve_spec(name, spec, expected_classes)
    prepared_root, raw_dir = Path(prepared_root), Path(raw_dir)
    source_dir = Path(source_dir) if source_dir is not None else None
    out = prepared_root / name
    _check_val_size(val_size)

    image_root = None
    if isinstance(spec, ImageNetSpec):
        image_root = _imagenet_root(imagenet_dir if imagenet_dir is not None else source_dir)
    settings = _settings(name, spec, val_size, split_seed, image_root)
    if not force and _is_up_to_date(out, settings):
        log.info("%s is up to date; not preparing again", out)
        return out

    base_url = download_url or getattr(spec, "base_url", "")
    if isinstance(spec, FashionMnistSpec):
        loaded = _load_fashion_mnist(spec, raw_dir, source_dir, base_url)
    elif isinstance(spec, Cifar10Spec):
        prepared_root.mkdir(parents=True, exist_ok=True)
        loaded = _load_cifar10(spec, raw_dir, source_dir, base_url, scratch_parent=prepared_root)
    else:
        loaded = _load_imagenet(spec, image_root)

    _write_prepared(out, spec, loaded, settings, val_size, split_seed)
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


def _resolve_spec(name: str, spec: DatasetSpec | None, expected_classes: int | None):
    default = get_spec(name)
    if spec is None:
        spec = default
    elif not isinstance(spec, type(default)):
        raise DataError(f"spec for {name!r} must be a {type(default).__name__}, got {spec!r}")
    if isinstance(spec, ImageNetSpec) and expected_classes is not None:
        spec = dataclasses.replace(spec, expected_classes=expected_classes)
    return spec


def _check_val_size(val_size: int) -> None:
    if isinstance(val_size, bool) or not isinstance(val_size, int | np.integer) or val_size < 0:
        raise DataError(f"val_size must be a non-negative integer, got {val_size!r}")


def _settings(name, spec, val_size, split_seed, image_root) -> dict[str, Any]:
    settings = {
        "dataset": name,
        "val_size": int(val_size),
        "split_seed": int(split_seed),
        "spec": spec_identity(spec),
    }
    if image_root is not None:
        settings["imagenet_root"] = str(image_root)
    return json.loads(json.dumps(settings))  # normalise to what the manifest reads back


def _is_up_to_date(out: Path, settings: dict[str, Any]) -> bool:
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    try:
        manifest = read_json(manifest_path)
    except ValueError:
        return False
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("settings") != settings:
        return False
    return all((out / f).is_file() for f in manifest.get("files", {}))


# ---------------------------------------------------------------------------- Fashion-MNIST


def _load_fashion_mnist(
    spec: FashionMnistSpec, raw_dir: Path, source_dir: Path | None, base_url: str
) -> _Loaded:
    contents, sources = {}, []
    for source in spec.files:
        path, origin, content, sums = _locate_gz(source, spec, raw_dir, source_dir, base_url)
        contents[source.name] = (path, content)
        sources.append(_source_record(source.name, origin, path, **sums))

    def arrays(images_file: SourceFile, labels_file: SourceFile, count: int):
        images_path, images_bytes = contents[images_file.name]
        labels_path, labels_bytes = contents[labels_file.name]
        images = idx.read_idx_images(images_bytes, str(images_path))
        labels = idx.read_idx_labels(labels_bytes, str(labels_path))
        images = images[..., None]  # add the channel axis: N,H,W,1
        _check_arrays(
            images,
            labels,
            spec.image_shape,
            count,
            len(spec.class_names),
            images_path,
            labels_path,
        )
        return images, labels

    return _Loaded(
        train=arrays(spec.train_images, spec.train_labels, spec.train_count),
        test=arrays(spec.test_images, spec.test_labels, spec.test_count),
        class_names=list(spec.class_names),
        sources=sources,
    )


def _locate_gz(source: SourceFile, spec, raw_dir, source_dir, base_url):
    """Find, verify and decompress one Fashion-MNIST file: (path, origin, content, checksums).

    A user's source folder is the only place looked at when given; a system copy that fails
    verification is skipped with a warning; a bad file in the raw folder is an error.
    """
    if source_dir is not None:
        path = source_dir / source.name
        if not path.is_file():
            names = ", ".join(f.name for f in spec.files)
            raise DataError(f"{path}: not found; the source folder must hold {names}")
        return (path, "source_dir", *idx.read_verified_gz(path, source))
    for folder in spec.system_dirs:
        path = Path(folder) / source.name
        if path.is_file():
            try:
                return (path, "system", *idx.read_verified_gz(path, source))
            except DataError as err:
                log.warning("ignoring system copy: %s", err)
    path, origin = raw_dir / source.name, "raw_dir"
    if not path.is_file():
        download(join_url(base_url, source.name), path, md5=source.md5)
        origin = "download"
    try:
        return (path, origin, *idx.read_verified_gz(path, source))
    except DataError as err:
        raise DataError(f"{err}. Delete {path} to download it again.") from err


def _check_arrays(images, labels, image_shape, count, num_classes, images_path, labels_path):
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise DataError(
            f"{images_path}: images have shape {tuple(images.shape[1:])}, "
            f"expected {tuple(image_shape)}"
        )
    if len(images) != count:
        raise DataError(f"{images_path}: holds {len(images)} images, expected {count}")
    if len(labels) != count:
        raise DataError(f"{labels_path}: holds {len(labels)} labels, expected {count}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{labels_path}: labels range from {labels.min()} to {labels.max()}, "
            f"expected 0..{num_classes - 1}"
        )


# ---------------------------------------------------------------------------- CIFAR-10


def _load_cifar10(
    spec: Cifar10Spec, raw_dir: Path, source_dir: Path | None, base_url: str, scratch_parent: Path
) -> _Loaded:
    archive, origin = _locate_archive(spec, raw_dir, source_dir, base_url)
    sources = [_source_record(spec.archive.name, origin, archive, md5=spec.archive.md5)]
    with tempfile.TemporaryDirectory(prefix=".cifar10-extract-", dir=scratch_parent) as scratch:
        safe_extract(archive, Path(scratch))
        folder = Path(scratch) / spec.folder
        if not folder.is_dir():
            raise DataError(f"{archive}: no folder {spec.folder}/ in the archive")
        train = cifar.read_cifar_batches(folder, spec.train_batches, spec.image_shape)
        test = cifar.read_cifar_batches(folder, spec.test_batches, spec.image_shape)
        class_names = cifar.read_class_names(folder / spec.meta_file, spec.num_classes)
    for (images, labels), count, batches in (
        (train, spec.train_count, spec.train_batches),
        (test, spec.test_count, spec.test_batches),
    ):
        where = f"{archive} ({', '.join(batches)})"
        _check_arrays(images, labels, spec.image_shape, count, spec.num_classes, where, where)
    return _Loaded(train=train, test=test, class_names=class_names, sources=sources)


def _locate_archive(spec: Cifar10Spec, raw_dir: Path, source_dir: Path | None, base_url: str):
    name, md5 = spec.archive.name, spec.archive.md5
    if source_dir is not None:
        path = source_dir / name
        if not path.is_file():
            raise DataError(f"{path}: not found; the source folder must hold {name}")
        check_md5(path, md5)
        return path, "source_dir"
    path = raw_dir / name
    if path.is_file():
        try:
            check_md5(path, md5)
        except DataError as err:
            raise DataError(f"{err}. Delete {path} to download it again.") from err
        return path, "raw_dir"
    return download(join_url(base_url, name), path, md5=md5), "download"


def _source_record(name: str, origin: str, path: Path, **checksums: str) -> dict[str, str]:
    """Manifest entry of one source file.

    The origin (source_dir, system, raw_dir or download) is recorded instead of the absolute
    path, so the same files give the same manifest (and manifest_hash) on every machine.
    """
    log.info("using %s (%s)", path, origin)
    return {"file": name, "origin": origin, "sha256": sha256_file(path), **checksums}


# ---------------------------------------------------------------------------- ImageNet


def _imagenet_root(folder: Path | None) -> Path:
    if folder is None:
        raise DataError(
            "imagenet cannot be downloaded: pass imagenet_dir, the ILSVRC2012 folder holding "
            "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
        )
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"{folder}: ImageNet folder not found")
    return folder


def _load_imagenet(spec: ImageNetSpec, root: Path) -> _Loaded:
    train_dir, test_dir = root / spec.train_dir, root / spec.test_dir
    classes = imagenet.list_classes(train_dir)
    imagenet.check_classes(train_dir, classes, spec.expected_classes)
    imagenet.check_classes(
        test_dir, imagenet.list_classes(test_dir), spec.expected_classes, reference=classes
    )
    return _Loaded(
        train=imagenet.index_split(root, train_dir, classes, spec.extensions),
        test=imagenet.index_split(root, test_dir, classes, spec.extensions),
        class_names=classes,
        sources=[{"path": str(root), "train_dir": spec.train_dir, "test_dir": spec.test_dir}],
        extra={"imagenet_root": str(root), "wnids": classes},
    )


# ---------------------------------------------------------------------------- writing


def _write_prepared(out, spec, loaded: _Loaded, settings, val_size, split_seed) -> None:
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
        write_json(tmp / MANIFEST_NAME, manifest)


def _write_index(path: Path, entries: list[tuple[str, int]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(entries)


def _chw(hwc: tuple[int, int, int]) -> list[int]:
    height, width, channels = hwc
    return [channels, height, width]
