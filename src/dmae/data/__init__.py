"""Datasets (Fashion-MNIST, CIFAR-10, ImageNet): preparation, loading and transforms.

Each dataset is one frozen dataclass (its spec, loader and transforms) in its own module,
found by name with ``get_dataset``. ``prepare_dataset`` verifies and converts its sources
into ``<prepared_root>/<name>/`` with a ``manifest.json``; ``load_split`` and
``get_dataset(name).transform(...)`` serve training and certification.
"""

from .archive import safe_extract
from .base import TASKS, Dataset
from .cifar import CIFAR10, Cifar10Spec, parse_cifar_batch
from .datasets import ArraySplit, ImageIndexSplit, load_split, manifest_hash, read_manifest
from .download import download
from .errors import DataError
from .fashion_mnist import FASHION_MNIST, FashionMnistSpec
from .idx import parse_idx
from .imagenet import IMAGENET, ImageNetSpec
from .prepare import FORMAT_VERSION, MANIFEST_NAME, SPLITS, prepare_dataset, split_indices
from .registry import DATASET_NAMES, DATASETS, get_dataset
from .sources import SourceFile

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
