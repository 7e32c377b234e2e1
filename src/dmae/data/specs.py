"""Dataset identities as data: file names, URLs, checksums and expected counts.

Everything the preparation code checks lives here, in frozen dataclasses, so callers (and
tests) can run the real code paths on other files by passing a modified spec, e.g.
``dataclasses.replace(FASHION_MNIST, train_count=20, ...)``. Values come from
``/work/shared/data/checksums.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import DataError


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
class FashionMnistSpec:
    """Fashion-MNIST: four gzip'd IDX files."""

    name: str = "fashion-mnist"
    base_url: str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    train_images: SourceFile = SourceFile(
        "train-images-idx3-ubyte.gz",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    )
    train_labels: SourceFile = SourceFile(
        "train-labels-idx1-ubyte.gz",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    )
    test_images: SourceFile = SourceFile(
        "t10k-images-idx3-ubyte.gz",
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    )
    test_labels: SourceFile = SourceFile(
        "t10k-labels-idx1-ubyte.gz",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    )
    # Folders searched (after the user's source_dir) before downloading: Debian's package.
    system_dirs: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
    image_shape: tuple[int, int, int] = (28, 28, 1)  # H, W, C as stored
    class_names: tuple[str, ...] = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    train_count: int = 60_000
    test_count: int = 10_000

    @property
    def files(self) -> tuple[SourceFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


@dataclass(frozen=True)
class Cifar10Spec:
    """CIFAR-10, binary version (never the python/pickle one)."""

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


@dataclass(frozen=True)
class ImageNetSpec:
    """ILSVRC2012 in class-folder layout, supplied by the user (no download)."""

    name: str = "imagenet"
    train_dir: str = "train"
    test_dir: str = "val"  # the official validation set is our certification test split
    expected_classes: int = 1000
    extensions: tuple[str, ...] = (".jpeg", ".jpg", ".png")


DatasetSpec = FashionMnistSpec | Cifar10Spec | ImageNetSpec

FASHION_MNIST = FashionMnistSpec()
CIFAR10 = Cifar10Spec()
IMAGENET = ImageNetSpec()
DEFAULT_SPECS: dict[str, DatasetSpec] = {s.name: s for s in (FASHION_MNIST, CIFAR10, IMAGENET)}
DATASET_NAMES: tuple[str, ...] = tuple(DEFAULT_SPECS)

# Fields that say where to look, not what the data is: left out of the identity so that
# moving a mirror does not invalidate a prepared folder.
_LOCATION_FIELDS = ("base_url", "system_dirs")


def get_spec(name: str) -> DatasetSpec:
    """Default spec of dataset ``name``; DataError naming the known datasets otherwise."""
    try:
        return DEFAULT_SPECS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}"
        ) from None


def spec_identity(spec: DatasetSpec) -> dict[str, Any]:
    """JSON-ready dict of the fields that define the data (recorded in the manifest)."""
    fields = dataclasses.asdict(spec)
    for key in _LOCATION_FIELDS:
        fields.pop(key, None)
    return _jsonable(fields)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
