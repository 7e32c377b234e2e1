"""What a dataset is: one frozen dataclass holding its spec, loader and transforms.

The dataclass fields are the spec (file names, checksums, counts, shapes): preparation
checks everything against them and records them in the manifest, so tests run the real code
on other files by passing a modified spec, e.g.
``dataclasses.replace(FASHION_MNIST, train_count=20, ...)``.

Transforms never normalise: Gaussian noise is added to [0,1] pixels and the models normalise
internally (with the mean/std of their config).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from .errors import DataError
from .sources import Loaded, Locations

TASKS = ("pretrain", "finetune", "linprobe")

# Fields that say where to look, not what the data is: left out of the identity so that
# moving a mirror does not invalidate a prepared folder.
_LOCATION_FIELDS = ("base_url", "system_dirs")


class Dataset(Protocol):
    """What preparation and training need of a dataset (besides its spec fields)."""

    name: str

    def source_settings(self, where: Locations) -> dict[str, Any]:
        """Manifest settings, beyond the spec, that a prepared folder must match (e.g. the
        folder an index points into); raises DataError when the sources cannot exist."""

    def load(self, where: Locations) -> Loaded:
        """Find, verify and read the sources; DataError naming the file on any problem."""

    def transform(
        self, train: bool, input_size: int, *, task: str = "finetune",
        randaugment: str | None = None,
    ) -> Callable:
        """Transform for ``load_split``, for training (``train``) or evaluation in ``task``;
        ``randaugment`` is a timm RandAugment spec such as "rand-m9-mstd0.5-inc1"."""


def spec_identity(spec: Any) -> dict[str, Any]:
    """JSON-ready dict of the fields that define the data (recorded in the manifest)."""
    fields = dataclasses.asdict(spec)
    for key in _LOCATION_FIELDS:
        fields.pop(key, None)
    return _jsonable(fields)


def check_task(task: str) -> None:
    if task not in TASKS:
        raise DataError(f"task: {task!r} is not one of {', '.join(TASKS)}")


class ArrayDataset:
    """Shared part of the datasets copied into arrays (Fashion-MNIST, CIFAR-10).

    Transforms take and return a tensor [C,H,W] at native resolution (any upsampling happens
    in the model, after the noise); neither ``input_size`` nor ``task`` changes them.
    """

    name: str

    def train_augmentation(self) -> list[Callable]:
        raise NotImplementedError

    def source_settings(self, where: Locations) -> dict[str, Any]:
        return {}  # the arrays are copied: the spec alone identifies them

    def transform(
        self, train: bool, input_size: int, *, task: str = "finetune",
        randaugment: str | None = None,
    ) -> Callable:
        """``train_augmentation()`` for training, the identity for evaluation."""
        check_task(task)
        if randaugment:
            raise DataError(f"randaugment: only used for imagenet, not {self.name}")
        from torchvision import transforms as T  # here: preparing data never needs it

        return T.Compose(self.train_augmentation() if train else [])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
