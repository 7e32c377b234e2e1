"""Datasets (Fashion-MNIST, CIFAR-10, ImageNet): preparation, loading and transforms.

Each dataset is one frozen dataclass (its spec, loader and transforms) in its own module,
found by name with ``get_dataset``. ``prepare_dataset`` verifies and converts its sources
into ``<prepared_root>/<name>/`` with a ``manifest.json``; ``load_split`` and
``get_dataset(name).transform(...)`` serve training and certification.
"""

from __future__ import annotations

import importlib

# Each name is imported from its module on first use (PEP 562): preparing data then never
# loads torch or torchvision, which only training and certification need (seconds per job).
_EXPORTS = {
    "archive": ("safe_extract",),
    "base": ("TASKS", "Dataset"),
    "cifar": ("CIFAR10", "Cifar10Spec", "parse_cifar_batch"),
    "datasets": ("ArraySplit", "ImageIndexSplit", "load_split", "manifest_hash", "read_manifest"),
    "download": ("download",),
    "errors": ("DataError",),
    "fashion_mnist": ("FASHION_MNIST", "FashionMnistSpec"),
    "idx": ("parse_idx",),
    "imagenet": ("IMAGENET", "ImageNetSpec"),
    "prepare": ("FORMAT_VERSION", "MANIFEST_NAME", "SPLITS", "prepare_dataset", "split_indices"),
    "registry": ("DATASET_NAMES", "DATASETS", "get_dataset"),
    "sources": ("SourceFile",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "CIFAR10",
    "DATASETS",
    "DATASET_NAMES",
    "FASHION_MNIST",
    "FORMAT_VERSION",
    "IMAGENET",
    "MANIFEST_NAME",
    "SPLITS",
    "TASKS",
    "ArraySplit",
    "Cifar10Spec",
    "DataError",
    "Dataset",
    "FashionMnistSpec",
    "ImageIndexSplit",
    "ImageNetSpec",
    "SourceFile",
    "download",
    "get_dataset",
    "load_split",
    "manifest_hash",
    "parse_cifar_batch",
    "parse_idx",
    "prepare_dataset",
    "read_manifest",
    "safe_extract",
    "split_indices",
]


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
