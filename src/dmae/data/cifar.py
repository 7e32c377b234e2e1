"""CIFAR-10 binary batches: records of 1 label byte + 3,072 pixel bytes.

Pixels are 1,024 red, then 1,024 green, then 1,024 blue values, each plane row-major 32x32.
Only the binary archive is read; the python version holds pickles and is never touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError


def parse_cifar_batch(
    data: bytes, *, image_shape: tuple[int, int, int] = (32, 32, 3), source: str = "<bytes>"
) -> tuple[np.ndarray, np.ndarray]:
    """Parse one binary batch into (images uint8 [N,H,W,C], labels int64 [N])."""
    height, width, channels = image_shape
    record = 1 + height * width * channels
    if len(data) == 0 or len(data) % record:
        raise DataError(
            f"{source}: {len(data)} bytes is not a whole number of {record}-byte records "
            "(truncated or not a CIFAR binary batch)"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, 0].astype(np.int64)
    # Channel planes first in the file; the prepared format is channels-last.
    images = rows[:, 1:].reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar_batches(
    folder: Path, names: tuple[str, ...], image_shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate the named batch files of ``folder``."""
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing from the CIFAR archive (expected {name})")
        batch_images, batch_labels = parse_cifar_batch(
            path.read_bytes(), image_shape=image_shape, source=str(path)
        )
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def read_class_names(path: Path, num_classes: int) -> list[str]:
    """Class names from ``batches.meta.txt`` (one a line, blank lines ignored)."""
    if not path.is_file():
        raise DataError(f"{path}: missing from the CIFAR archive (class names file)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if len(names) != num_classes:
        raise DataError(f"{path}: found {len(names)} class names, expected {num_classes}")
    return names


def encode_cifar_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Encode uint8 images [N,H,W,C] and labels as a binary batch (for fixtures)."""
    planes = np.ascontiguousarray(images, dtype=np.uint8).transpose(0, 3, 1, 2)
    flat = planes.reshape(len(images), -1)
    rows = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], flat], axis=1)
    return rows.tobytes()
