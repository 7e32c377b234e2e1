"""Test helpers: tiny datasets written in the real source formats, with specs that match them.

Passing the returned spec to ``prepare_dataset`` runs the real verification, parsing and
writing code on a few images. Image ``i`` of each split stores ``i % 256`` and ``i // 256``
in its first two pixels (channel 0), so a test can tell which source image ended up where.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dmae.data import CIFAR10, FASHION_MNIST, Cifar10Spec, FashionMnistSpec, SourceFile
from dmae.io import md5_file


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (magic 0x0000 08 <ndim>: unsigned bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes()


def encode_cifar_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Encode uint8 images [N,H,W,C] and labels as a CIFAR binary batch."""
    planes = np.ascontiguousarray(images, dtype=np.uint8).transpose(0, 3, 1, 2)
    flat = planes.reshape(len(images), -1)
    rows = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], flat], axis=1)
    return rows.tobytes()


def synthetic_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Random uint8 images [n,H,W,C] whose first two pixels encode their index."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    index = np.arange(n)
    images[:, 0, 0, 0] = index % 256
    images[:, 0, 1, 0] = index // 256
    return images


def image_ids(images: np.ndarray) -> np.ndarray:
    """Indices encoded by :func:`synthetic_images`."""
    return images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 1, 0].astype(np.int64)


def write_fashion_mnist_fixture(
    folder: Path, n_train: int = 40, n_test: int = 20, *, seed: int = 0, compresslevel: int = 9
) -> FashionMnistSpec:
    """Write the four gzip'd IDX files into ``folder``; return a spec that matches them.

    Labels cycle through the 10 classes. The spec has no system folders, so preparing with
    it never picks up Debian's real files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = FASHION_MNIST
    height, width, _ = spec.image_shape
    arrays = {
        spec.train_images.name: synthetic_images(n_train, (height, width, 1), seed)[..., 0],
        spec.train_labels.name: np.arange(n_train) % 10,
        spec.test_images.name: synthetic_images(n_test, (height, width, 1), seed + 1)[..., 0],
        spec.test_labels.name: np.arange(n_test) % 10,
    }
    files = {}
    for name, array in arrays.items():
        content = encode_idx(array)
        path = folder / name
        path.write_bytes(gzip.compress(content, compresslevel=compresslevel, mtime=0))
        files[name] = SourceFile(name, md5_file(path), hashlib.sha256(content).hexdigest())
    return dataclasses.replace(
        spec,
        train_images=files[spec.train_images.name],
        train_labels=files[spec.train_labels.name],
        test_images=files[spec.test_images.name],
        test_labels=files[spec.test_labels.name],
        system_dirs=(),
        train_count=n_train,
        test_count=n_test,
    )


def cifar_member_bytes(per_batch: int = 4, n_test: int = 10, seed: int = 0) -> dict[str, bytes]:
    """Contents of the CIFAR-10 binary archive's members, keyed by archive path."""
    spec = CIFAR10
    n_train = per_batch * len(spec.train_batches)
    train = synthetic_images(n_train, spec.image_shape, seed)
    test = synthetic_images(n_test, spec.image_shape, seed + 1)
    members = {}
    for b, name in enumerate(spec.train_batches):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        labels = np.arange(n_train)[rows] % spec.num_classes
        members[f"{spec.folder}/{name}"] = encode_cifar_batch(train[rows], labels)
    members[f"{spec.folder}/{spec.test_batches[0]}"] = encode_cifar_batch(
        test, np.arange(n_test) % spec.num_classes
    )
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    members[f"{spec.folder}/{spec.meta_file}"] = ("\n".join(names) + "\n\n").encode()
    return members


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    """Write a .tar.gz holding ``members`` (regular files) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return path


def write_cifar10_fixture(
    folder: Path, per_batch: int = 4, n_test: int = 10, *, seed: int = 0
) -> Cifar10Spec:
    """Write ``cifar-10-binary.tar.gz`` into ``folder``; return a spec that matches it."""
    spec = CIFAR10
    archive = write_tar_gz(
        Path(folder) / spec.archive.name, cifar_member_bytes(per_batch, n_test, seed)
    )
    return dataclasses.replace(
        spec,
        archive=SourceFile(spec.archive.name, md5_file(archive)),
        train_count=per_batch * len(spec.train_batches),
        test_count=n_test,
    )


def write_imagenet_fixture(
    root: Path,
    wnids: Sequence[str],
    train_per_class: int | Sequence[int] = 3,
    val_per_class: int | Sequence[int] = 2,
    size: int | tuple[int, int] = 8,
    extension: str = ".JPEG",
    *,
    ilsvrc_names: bool = False,
    class_colours: bool = False,
    odd_modes: bool = False,
) -> Path:
    """Write tiny JPEGs in class-folder layout under ``root`` (folders created in the given
    order); return ``root``.

    ``train_per_class`` / ``val_per_class``: one count for every class, or one per wnid.
    ``size``: side, or (width, height). Files are named ``<wnid>_<i>`` unless
    ``ilsvrc_names``: then as in the real ILSVRC2012 folders, train ``<wnid>_<number>.JPEG``
    with scattered numbers and val ``ILSVRC2012_val_<8 digits>.JPEG`` numbered 1..N over the
    whole split in a shuffled class order, each in its class folder (as the usual valprep.sh
    leaves them). ``class_colours``: every image of the class with sorted label ``k`` is
    :func:`imagenet_class_colour` (k) plus a little noise, so a test can check the decoded
    pixels. ``odd_modes``: as in the real ImageNet, a few files are not RGB JPEGs: the first
    train file of the second wnid is greyscale, the first val file of the third is CMYK and
    the first train file of the fourth a PNG named .JPEG (needs at least four wnids).
    """
    root = Path(root)
    rng = np.random.default_rng(0)
    width, height = (size, size) if isinstance(size, int) else size
    labels = {wnid: k for k, wnid in enumerate(sorted(wnids))}
    odd = {}
    if odd_modes:
        odd = {("train", wnids[1], 0): ("L", "JPEG"), ("val", wnids[2], 0): ("CMYK", "JPEG"),
               ("train", wnids[3], 0): ("RGB", "PNG")}
    val_numbers = iter(range(1, 10**8))
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        counts = [count] * len(wnids) if isinstance(count, int) else list(count)
        if len(counts) != len(wnids):
            raise ValueError(f"{split}: {len(counts)} counts for {len(wnids)} wnids")
        order = rng.permutation(len(wnids)) if ilsvrc_names and split == "val" else range(
            len(wnids))
        for w in order:
            wnid = wnids[w]
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            if ilsvrc_names and split == "train":
                numbers = np.sort(rng.choice(20_000, size=counts[w], replace=False)) + 1
            for i in range(counts[w]):
                if not ilsvrc_names:
                    name = f"{wnid}_{i}{extension}"
                elif split == "train":
                    name = f"{wnid}_{numbers[i]}{extension}"
                else:
                    name = f"ILSVRC2012_val_{next(val_numbers):08d}{extension}"
                if class_colours:
                    noise = rng.integers(-8, 9, size=(height, width, 3))
                    pixels = np.clip(imagenet_class_colour(labels[wnid]) + noise, 0, 255)
                else:
                    pixels = rng.integers(0, 256, size=(height, width, 3))
                image = Image.fromarray(pixels.astype(np.uint8))
                mode, fmt = odd.get((split, wnid, i), ("RGB", "JPEG"))
                image.convert(mode).save(folder / name, format=fmt)
    return root


def imagenet_class_colour(label: int) -> np.ndarray:
    """The RGB colour of class ``label`` in ``write_imagenet_fixture(class_colours=True)``:
    three clearly different channels, so a channel swap or a greyscale decode shows."""
    return np.array([40 + (label * 37) % 60, 110 + (label * 53) % 40, 190 + (label * 11) % 50])
