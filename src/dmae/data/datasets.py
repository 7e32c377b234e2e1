"""Loading prepared splits as torch Datasets (used by training and certification)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import DataError
from .prepare import SPLITS, read_manifest


class _ManifestInfo:
    """Dataset metadata read from the manifest."""

    manifest: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of one image as yielded, or None when sizes vary (ImageNet)."""
        shape = self.manifest["image_shape"]
        return tuple(shape) if shape is not None else None


class ArraySplit(_ManifestInfo, Dataset):
    """One split of an array dataset: (float32 [C,H,W] in [0,1], int label)."""

    def __init__(self, prepared_dir: Path, split: str, manifest: dict, transform=None):
        self.manifest = manifest
        self.transform = transform
        prepared_dir = Path(prepared_dir)
        self._images_path = prepared_dir / f"{split}_images.npy"
        # Memory-mapped: DataLoader workers share the pages instead of copying the arrays.
        self.images = _load_npy(self._images_path, mmap=True)
        self.targets = _load_npy(prepared_dir / f"{split}_labels.npy", mmap=False)
        if self.images.ndim != 4 or len(self.images) != len(self.targets):
            raise DataError(
                f"{prepared_dir}: {split} images {self.images.shape} and labels "
                f"{self.targets.shape} do not match"
            )

    def __getstate__(self):
        # Pickled for spawned DataLoader workers: send the path, not a copy of the array.
        state = self.__dict__.copy()
        state["images"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.images = _load_npy(self._images_path, mmap=True)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = pixels_to_tensor(np.array(self.images[index]))  # copy out of the memmap
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels [H,W,C] as the float tensor [C,H,W] in [0,1] a prepared split yields."""
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous().float().div_(255.0)


class ImageIndexSplit(_ManifestInfo, Dataset):
    """One split of an indexed image dataset (ImageNet): (transform(PIL RGB image), label).

    Without a transform the PIL image itself is returned.
    """

    def __init__(
        self,
        prepared_dir: Path,
        split: str,
        manifest: dict,
        transform=None,
        image_root: Path | None = None,
    ):
        self.manifest = manifest
        self.transform = transform
        self.root = Path(image_root if image_root is not None else manifest["imagenet_root"])
        self.paths, targets = _read_index(Path(prepared_dir) / f"{split}.csv")
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        with Image.open(self.root / self.paths[index]) as img:
            image = img.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def load_split(
    prepared_dir: Path,
    split: str,
    transform: Callable | None = None,
    *,
    image_root: Path | None = None,
) -> ArraySplit | ImageIndexSplit:
    """Dataset of one prepared split (``train``, ``val`` or ``test``).

    Array datasets yield (float32 tensor [C,H,W] in [0,1], label), with ``transform``
    applied to the tensor; ImageNet yields (``transform(PIL RGB image)``, label).
    ``image_root`` overrides the ImageNet root recorded in the manifest (data moved).
    The result exposes ``num_classes``, ``class_names``, ``image_shape`` and ``targets``.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    manifest = read_manifest(prepared_dir)
    if manifest["storage"] == "arrays":
        return ArraySplit(prepared_dir, split, manifest, transform)
    return ImageIndexSplit(prepared_dir, split, manifest, transform, image_root)


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: not found; prepare the dataset again")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as err:
        raise DataError(f"{path}: not a valid .npy array file ({err})") from err


def _read_index(path: Path) -> tuple[list[str], Sequence[int]]:
    if not path.is_file():
        raise DataError(f"{path}: not found; prepare the dataset again")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != ["path", "label"]:
            raise DataError(f"{path}: header {header}, expected ['path', 'label']")
        rows = list(reader)
    return [r[0] for r in rows], [int(r[1]) for r in rows]
