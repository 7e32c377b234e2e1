"""Datasets (Fashion-MNIST, CIFAR-10, ImageNet): preparation, loading and transforms.

Each dataset is one frozen dataclass (its spec, loader and transforms) in its own module,
found by name with ``get_dataset``. ``prepare_dataset`` verifies and converts its sources
into ``<prepared_root>/<name>/`` with a ``manifest.json``; ``load_split`` and
``get_dataset(name).transform(...)`` serve training and certification.
"""

from __future__ import annotations

from dmae import lazy_exports

# Each name is imported from its module on first use (PEP 562): preparing data then never
# loads torch or torchvision, which only training and certification need (seconds per job).
_EXPORTS = {
    "archive": ("safe_extract",),
    "base": ("TASKS", "Dataset"),
    "cifar": ("CIFAR10", "Cifar10Spec", "parse_cifar_batch"),
    "datasets": ("ArraySplit", "ImageIndexSplit", "load_split"),
    "download": ("download",),
    "errors": ("DataError",),
    "fashion_mnist": ("FASHION_MNIST", "FashionMnistSpec"),
    "idx": ("parse_idx",),
    "imagenet": ("IMAGENET", "ImageNetSpec"),
    "prepare": ("FORMAT_VERSION", "SPLITS", "manifest_hash", "prepare_dataset", "read_manifest",
                "split_indices"),
    "registry": ("DATASET_NAMES", "DATASETS", "get_dataset"),
    "sources": ("SourceFile",),
}

__all__ = [
    "CIFAR10",
    "DATASETS",
    "DATASET_NAMES",
    "FASHION_MNIST",
    "FORMAT_VERSION",
    "IMAGENET",
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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
