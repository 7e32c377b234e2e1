"""Dataset preparation (Fashion-MNIST, CIFAR-10, ImageNet) and loading.

``prepare_dataset`` verifies and converts sources into ``<prepared_root>/<name>/`` with a
``manifest.json``; ``load_split`` / ``build_transform`` / ``stride_subset`` serve training
and certification.
"""

from .archive import safe_extract
from .cifar import parse_cifar_batch
from .datasets import (
    ArraySplit,
    ImageIndexSplit,
    StrideSubset,
    load_split,
    manifest_hash,
    read_manifest,
    stride_subset,
)
from .download import download
from .errors import DataError
from .idx import parse_idx
from .prepare import FORMAT_VERSION, MANIFEST_NAME, SPLITS, prepare_dataset, split_indices
from .specs import (
    CIFAR10,
    DATASET_NAMES,
    DEFAULT_SPECS,
    FASHION_MNIST,
    IMAGENET,
    Cifar10Spec,
    FashionMnistSpec,
    ImageNetSpec,
    SourceFile,
    get_spec,
)
from .transforms import build_transform

__all__ = [
    "CIFAR10",
    "DATASET_NAMES",
    "DEFAULT_SPECS",
    "FASHION_MNIST",
    "FORMAT_VERSION",
    "IMAGENET",
    "MANIFEST_NAME",
    "SPLITS",
    "ArraySplit",
    "Cifar10Spec",
    "DataError",
    "FashionMnistSpec",
    "ImageIndexSplit",
    "ImageNetSpec",
    "SourceFile",
    "StrideSubset",
    "build_transform",
    "download",
    "get_spec",
    "load_split",
    "manifest_hash",
    "parse_cifar_batch",
    "parse_idx",
    "prepare_dataset",
    "read_manifest",
    "safe_extract",
    "split_indices",
    "stride_subset",
]
