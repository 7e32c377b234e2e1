"""What every dataset's loader shares: published files, where to look for them, what it returns."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..io import sha256_file
from .download import download, join_url
from .errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class SourceFile:
    """One published file.

    ``md5`` is the MD5 of the file exactly as published; ``content_sha256`` (gzip'd files
    only) is the sha256 of its decompressed bytes, which also identifies recompressed copies
    such as Debian's.
    """

    name: str
    md5: str
    content_sha256: str | None = None


@dataclass(frozen=True)
class Locations:
    """Where preparation looks for a dataset's sources (the arguments of prepare_dataset)."""

    raw_dir: Path  # downloads go here
    scratch_dir: Path  # for extracting archives: beside the output, on the same filesystem
    source_dir: Path | None = None  # when given, the only place looked at
    download_url: str | None = None  # base URL replacing the dataset's own
    imagenet_dir: Path | None = None  # datasets indexed in place (ImageNet)
    progress: bool = True  # bars on stderr for downloads, extraction and indexing


@dataclass
class Loaded:
    """What a dataset's loader hands to the writer."""

    train: Any  # (images uint8 [N,H,W,C], labels int64 [N]), or a list of (path, label)
    test: Any
    class_names: list[str]
    sources: list[dict[str, Any]]  # manifest records of the files read
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # more manifest keys


def locate(
    source: SourceFile,
    where: Locations,
    base_url: str,
    verify: Callable[[Path], T],
    *,
    system_dirs: Sequence[str] = (),
    must_hold: str | None = None,
) -> tuple[Path, str, T]:
    """Find and verify one published file: (path, origin, what ``verify`` returned).

    A user's source folder is the only place looked at when given (``must_hold`` names what
    it must contain); otherwise ``system_dirs``, where a copy that fails verification is
    skipped with a warning; then the raw folder, downloading into it when the file is missing.
    A bad file in the raw folder is an error that says to delete it.
    """
    if where.source_dir is not None:
        path = where.source_dir / source.name
        if not path.is_file():
            raise DataError(
                f"{path}: not found; the source folder must hold {must_hold or source.name}"
            )
        return path, "source_dir", verify(path)
    for folder in system_dirs:
        path = Path(folder) / source.name
        if path.is_file():
            try:
                return path, "system", verify(path)
            except DataError as err:
                log.warning("ignoring system copy: %s", err)
    path, origin = where.raw_dir / source.name, "raw_dir"
    if not path.is_file():
        download(join_url(base_url, source.name), path, md5=source.md5,
                 progress=where.progress)
        origin = "download"
    try:
        return path, origin, verify(path)
    except DataError as err:
        raise DataError(f"{err}. Delete {path} to download it again.") from err


def source_record(name: str, origin: str, path: Path, **checksums: str) -> dict[str, str]:
    """Manifest entry of one source file.

    The origin (source_dir, system, raw_dir or download) is recorded instead of the absolute
    path, so the same files give the same manifest (and manifest_hash) on every machine.
    """
    log.info("using %s (%s)", path, origin)
    return {"file": name, "origin": origin, "sha256": sha256_file(path), **checksums}


def check_arrays(images, labels, image_shape, count, num_classes, images_path, labels_path):
    """Raise DataError unless the arrays have the expected item shape, count and labels."""
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
