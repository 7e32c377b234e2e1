"""CIFAR-10, from its binary archive: batches of 1 label byte + 3,072 pixel bytes a record.

Pixels are 1,024 red, then 1,024 green, then 1,024 blue values, each plane row-major 32x32.
Only the binary archive is read; the python version holds pickles and is never touched.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .archive import safe_extract
from .base import ArrayDataset
from .download import check_md5
from .errors import DataError
from .sources import Loaded, Locations, SourceFile, check_arrays, locate, source_record


@dataclass(frozen=True)
class Cifar10Spec(ArrayDataset):
    """CIFAR-10, binary version (MD5 as its publisher lists it on the CIFAR page)."""

    name: str = "cifar10"
    base_url: str = "https://www.cs.toronto.edu/~kriz/"
    archive: SourceFile = SourceFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")
    folder: str = "cifar-10-batches-bin"
    train_batches: tuple[str, ...] = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
    test_batches: tuple[str, ...] = ("test_batch.bin",)
    meta_file: str = "batches.meta.txt"
    image_shape: tuple[int, int, int] = (32, 32, 3)
    num_classes: int = 10
    train_count: int = 50_000
    test_count: int = 10_000

    def train_augmentation(self) -> list[Callable]:
        from torchvision import transforms as T  # here: preparing data never needs it

        return [T.RandomHorizontalFlip()]  # the committed results use exactly this

    def load(self, where: Locations) -> Loaded:
        """Verify the archive's MD5, extract it safely next to the output and read it."""
        archive, origin, _ = locate(
            self.archive,
            where,
            where.download_url or self.base_url,
            functools.partial(check_md5, expected=self.archive.md5),
        )
        sources = [source_record(self.archive.name, origin, archive, md5=self.archive.md5)]
        where.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".cifar10-extract-", dir=where.scratch_dir) as tmp:
            safe_extract(archive, Path(tmp), progress=where.progress)
            folder = Path(tmp) / self.folder
            if not folder.is_dir():
                raise DataError(f"{archive}: no folder {self.folder}/ in the archive")
            train = read_cifar_batches(folder, self.train_batches, self.image_shape)
            test = read_cifar_batches(folder, self.test_batches, self.image_shape)
            class_names = read_class_names(folder / self.meta_file, self.num_classes)
        for (images, labels), count, batches in (
            (train, self.train_count, self.train_batches),
            (test, self.test_count, self.test_batches),
        ):
            read_from = f"{archive} ({', '.join(batches)})"
            check_arrays(images, labels, self.image_shape, count, self.num_classes,
                         read_from, read_from)
        return Loaded(train=train, test=test, class_names=class_names, sources=sources)


CIFAR10 = Cifar10Spec()


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

