"""prepare_dataset on fixture files: manifest, val split, re-use, errors, loading."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import pickle

import numpy as np
import pytest
import torch
import yaml
from data_fixtures import (
    image_ids,
    write_cifar10_fixture,
    write_fashion_mnist_fixture,
    write_imagenet_fixture,
)

from dmae import config as cfglib
from dmae.data import (
    DataError,
    SourceFile,
    get_dataset,
    load_split,
    manifest_hash,
    prepare_dataset,
    read_manifest,
    split_indices,
)
from dmae.data.stage import prepare
from dmae.io import sha256_file


@pytest.fixture
def fashion(tmp_path):
    """Fixture files in a user source folder; returns (spec, source_dir)."""
    source = tmp_path / "source"
    return write_fashion_mnist_fixture(source, n_train=40, n_test=20), source


def _prepare_fashion(tmp_path, spec, source, **kwargs):
    kwargs.setdefault("val_size", 10)
    return prepare_dataset(
        "fashion-mnist",
        tmp_path / "prepared",
        tmp_path / "raw",
        source_dir=source,
        spec=spec,
        **kwargs,
    )


def test_fashion_manifest_and_arrays(tmp_path, fashion):
    spec, source = fashion
    out = _prepare_fashion(tmp_path, spec, source, split_seed=3)
    assert out == tmp_path / "prepared" / "fashion-mnist"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["dataset"] == "fashion-mnist"
    assert manifest["counts"] == {"train": 30, "val": 10, "test": 20}
    assert {k: sum(c) for k, c in manifest["class_counts"].items()} == manifest["counts"]
    assert manifest["class_counts"]["test"] == [2] * 10
    assert manifest["class_names"][0] == "T-shirt/top" and manifest["num_classes"] == 10
    assert manifest["image_shape"] == [1, 28, 28]
    assert (manifest["val_size"], manifest["split_seed"]) == (10, 3)
    assert [s["file"] for s in manifest["sources"]] == [f.name for f in spec.files]
    assert manifest["sources"][0]["sha256"] == sha256_file(source / spec.train_images.name)
    assert {s["origin"] for s in manifest["sources"]} == {"source_dir"}
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    images = np.load(out / "train_images.npy", allow_pickle=False)
    labels = np.load(out / "train_labels.npy", allow_pickle=False)
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28, 1)
    assert labels.dtype == np.int64 and (labels == image_ids(images) % 10).all()
    assert not list((tmp_path / "raw").glob("*"))  # a source folder is read in place


def test_val_split_disjoint_deterministic_and_sized(tmp_path, fashion):
    spec, source = fashion
    out = _prepare_fashion(tmp_path, spec, source, split_seed=7)

    def ids(split):
        return set(image_ids(np.load(out / f"{split}_images.npy", allow_pickle=False)).tolist())

    train, val = ids("train"), ids("val")
    assert len(val) == 10 and not train & val and train | val == set(range(40))
    assert sorted(val) == np.load(out / "val_indices.npy").tolist()
    train_idx, val_idx = split_indices(40, 10, seed=7)
    assert sorted(val) == val_idx.tolist() and sorted(train) == train_idx.tolist()
    assert split_indices(40, 10, seed=7)[1].tolist() == val_idx.tolist()
    assert split_indices(40, 10, seed=8)[1].tolist() != val_idx.tolist()
    assert len(split_indices(40, 0, seed=7)[1]) == 0
    with pytest.raises(DataError, match="val_size=40"):
        split_indices(40, 40, seed=0)


def test_up_to_date_folder_is_kept_unless_settings_change_or_force(tmp_path, fashion):
    spec, source = fashion
    out = _prepare_fashion(tmp_path, spec, source)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    digest = manifest_hash(out)
    assert _prepare_fashion(tmp_path, spec, source) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    _prepare_fashion(tmp_path, spec, source, force=True)
    assert (out / "manifest.json").stat().st_mtime_ns != stamp
    assert manifest_hash(out) == digest  # same inputs, same manifest: reproducible
    _prepare_fashion(tmp_path, spec, source, val_size=12)
    assert json.loads((out / "manifest.json").read_text())["counts"]["val"] == 12
    assert manifest_hash(out) != digest


def test_recompressed_source_files_are_accepted(tmp_path, fashion):
    spec, source = fashion
    for f in spec.files:  # recompress like Debian does: other MD5, same content
        path = source / f.name
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), 1, mtime=99))
    manifest = json.loads((_prepare_fashion(tmp_path, spec, source) / "manifest.json").read_text())
    assert manifest["sources"][0]["md5"] != spec.train_images.md5
    assert manifest["sources"][0]["content_sha256"] == spec.train_images.content_sha256


def test_bad_source_leaves_previous_output_untouched(tmp_path, fashion):
    spec, source = fashion
    out = _prepare_fashion(tmp_path, spec, source)
    before = sorted(p.name for p in (tmp_path / "prepared").iterdir())
    bad = source / spec.test_labels.name
    bad.write_bytes(bad.read_bytes()[:-4])
    with pytest.raises(DataError, match=spec.test_labels.name):
        _prepare_fashion(tmp_path, spec, source, force=True)
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == before
    assert len(load_split(out, "test")) == 20
    bad.unlink()
    with pytest.raises(DataError, match=rf"{bad}: not found"):
        _prepare_fashion(tmp_path, spec, source, force=True)


def test_wrong_count_in_spec(tmp_path, fashion):
    spec, source = fashion
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: holds 40 images, exp"):
        _prepare_fashion(tmp_path, dataclasses.replace(spec, train_count=41), source)
    assert not (tmp_path / "prepared" / "fashion-mnist").exists()


def test_load_split_with_and_without_transforms(tmp_path, fashion):
    spec, source = fashion
    out = _prepare_fashion(tmp_path, spec, source)
    test = load_split(out, "test")
    image, label = test[3]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
    assert image.min() >= 0.0 and image.max() <= 1.0 and label == 3
    raw = np.load(out / "test_images.npy", allow_pickle=False)[3, :, :, 0]
    torch.testing.assert_close(image[0], torch.from_numpy(raw).float() / 255)
    assert (test.num_classes, test.image_shape) == (10, (1, 28, 28))
    assert test.class_names[9] == "Ankle boot"

    fashion_mnist = get_dataset("fashion-mnist")
    augmented = load_split(out, "train", fashion_mnist.transform(True, 224))
    assert augmented[0][0].shape == (1, 28, 28)
    assert torch.equal(fashion_mnist.transform(False, 224)(image), image)
    pickled = pickle.dumps(test)  # what spawned DataLoader workers receive: no pixels
    assert raw.tobytes() not in pickled and torch.equal(pickle.loads(pickled)[3][0], image)
    loader = torch.utils.data.DataLoader(test, batch_size=8)
    batch, labels = next(iter(loader))
    assert batch.shape == (8, 1, 28, 28) and labels.dtype == torch.int64
    with pytest.raises(DataError, match="unknown split"):
        load_split(out, "validation")


def test_cifar10_from_raw_dir(tmp_path):
    raw = tmp_path / "raw"
    spec = write_cifar10_fixture(raw, per_batch=3, n_test=10)  # placed by hand in raw_dir
    out = prepare_dataset("cifar10", tmp_path / "prepared", raw, val_size=5, spec=spec)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 10, "val": 5, "test": 10}
    assert manifest["class_names"][:2] == ["airplane", "automobile"]
    assert manifest["image_shape"] == [3, 32, 32]
    assert manifest["sources"][0]["md5"] == spec.archive.md5
    assert manifest["sources"][0]["origin"] == "raw_dir"
    test = load_split(out, "test", get_dataset("cifar10").transform(True, 224))
    assert test[0][0].shape == (3, 32, 32)
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["cifar10"]


def test_cifar10_archive_checksum_mismatch(tmp_path):
    raw = tmp_path / "raw"
    spec = write_cifar10_fixture(raw, per_batch=3)
    spec = dataclasses.replace(spec, archive=SourceFile(spec.archive.name, "0" * 32))
    with pytest.raises(DataError) as info:
        prepare_dataset("cifar10", tmp_path / "prepared", raw, val_size=5, spec=spec)
    message = str(info.value)
    assert str(raw / "cifar-10-binary.tar.gz") in message and "0" * 32 in message
    assert "Delete" in message and not (tmp_path / "prepared" / "cifar10").exists()


def test_unknown_dataset_and_wrong_spec_type(tmp_path, fashion):
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        prepare_dataset("mnist", tmp_path / "p", tmp_path / "r", val_size=1)
    with pytest.raises(DataError, match="must be a Cifar10Spec"):
        prepare_dataset("cifar10", tmp_path / "p", tmp_path / "r", val_size=1, spec=fashion[0])


def test_the_config_states_how_many_imagenet_classes_to_prepare(tmp_path, repo):
    """dataset.expected_classes reaches preparation: a folder of 3 classes stops the stage
    while the config expects ImageNet's 1000 (the message names the key) and prepares once it
    says 3; the manifest, whence the classifiers take their outputs, then has 3 classes."""
    wnids = ["n03000000", "n01000000", "n02000000"]
    root = write_imagenet_fixture(tmp_path / "ILSVRC2012", wnids, train_per_class=4)
    cfg = yaml.safe_load((repo / "config" / "imagenet.yaml").read_text())
    cfg["dataset"].update(imagenet_dir=str(root), val_size=3)
    cfg["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    with pytest.raises(DataError, match=r"found 3 class folders, expected 1000 .*"
                                        r"dataset\.expected_classes"):
        prepare(cfglib.validate(copy.deepcopy(cfg)))
    assert not (tmp_path / "data" / "prepared" / "imagenet").exists()

    cfg["dataset"]["expected_classes"] = 3
    out = prepare(cfglib.validate(cfg))
    assert out == tmp_path / "data" / "prepared" / "imagenet"
    manifest = read_manifest(out)
    assert manifest["num_classes"] == 3 and manifest["class_names"] == sorted(wnids)
    assert manifest["settings"]["spec"]["expected_classes"] == 3
