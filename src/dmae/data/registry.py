"""The datasets by name: adding one is a module with its dataclass and a line here."""

from __future__ import annotations

import dataclasses

from .base import Dataset
from .cifar import CIFAR10
from .errors import DataError
from .fashion_mnist import FASHION_MNIST
from .imagenet import IMAGENET

DATASETS: dict[str, Dataset] = {d.name: d for d in (FASHION_MNIST, CIFAR10, IMAGENET)}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def get_dataset(name: str, expected_classes: int | None = None) -> Dataset:
    """Dataset ``name`` (its default spec, or a subset of ``expected_classes`` classes: the
    config's dataset.expected_classes); DataError naming the known datasets otherwise."""
    try:
        spec = DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}"
        ) from None
    return with_expected_classes(spec, expected_classes)


def with_expected_classes(spec: Dataset, expected_classes: int | None) -> Dataset:
    """``spec`` for a subset of ``expected_classes`` classes (None: ``spec`` as it is)."""
    if expected_classes is None:
        return spec
    if not hasattr(spec, "expected_classes"):
        raise DataError(f"expected_classes: {spec.name} has a fixed set of classes")
    return dataclasses.replace(spec, expected_classes=expected_classes)
