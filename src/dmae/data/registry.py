"""The datasets by name: adding one is a module with its dataclass and a line here."""

from __future__ import annotations

from .base import Dataset
from .cifar import CIFAR10
from .errors import DataError
from .fashion_mnist import FASHION_MNIST
from .imagenet import IMAGENET

DATASETS: dict[str, Dataset] = {d.name: d for d in (FASHION_MNIST, CIFAR10, IMAGENET)}
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def get_dataset(name: str) -> Dataset:
    """Dataset ``name`` (its default spec); DataError naming the known datasets otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}"
        ) from None
