"""ImageNet class-folder indexing: sorted wnid labels, clear layout errors."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest
import torch
from data_fixtures import imagenet_class_colour, write_imagenet_fixture
from PIL import Image

from dmae.data import DataError, get_dataset, load_split, prepare_dataset

WNIDS = ["n03000000", "n01000000", "n02000000"]  # created in this (unsorted) order


@pytest.fixture
def imagenet_root(tmp_path):
    return write_imagenet_fixture(tmp_path / "ILSVRC2012", WNIDS, train_per_class=4)


def _prepare(tmp_path, root, **kwargs):
    kwargs.setdefault("expected_classes", 3)
    return prepare_dataset(
        "imagenet",
        tmp_path / "prepared",
        tmp_path / "raw",
        val_size=3,
        imagenet_dir=root,
        **kwargs,
    )


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_index_in_sorted_wnid_order(tmp_path, imagenet_root):
    # One more accepted extension: lower-case .jpg and .png; other files are skipped.
    shutil.copy(
        imagenet_root / "val/n02000000/n02000000_0.JPEG", imagenet_root / "val/n02000000/x.jpg"
    )
    (imagenet_root / "val/n02000000/readme.txt").write_text("not an image")
    out = _prepare(tmp_path, imagenet_root)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == sorted(WNIDS) == manifest["wnids"]
    assert manifest["imagenet_root"] == str(imagenet_root.resolve())
    assert manifest["counts"] == {"train": 9, "val": 3, "test": 7}
    assert manifest["class_counts"]["test"] == [2, 3, 2]
    assert manifest["image_shape"] is None and manifest["storage"] == "image_index"

    rows = _rows(out / "test.csv")
    for row in rows:
        wnid = row["path"].split("/")[1]
        assert row["path"].startswith("val/") and int(row["label"]) == sorted(WNIDS).index(wnid)
    assert not any(r["path"].endswith(".txt") for r in rows)
    train_paths = {r["path"] for r in _rows(out / "train.csv")}
    val_paths = {r["path"] for r in _rows(out / "val.csv")}
    assert len(train_paths | val_paths) == 12 and not train_paths & val_paths

    imagenet = get_dataset("imagenet")
    dataset = load_split(out, "test", imagenet.transform(False, 16))
    image, label = dataset[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 0
    train = load_split(out, "train", imagenet.transform(True, 16))
    assert train[0][0].shape == (3, 16, 16) and train.num_classes == 3
    assert load_split(out, "val")[0][0].mode == "RGB"  # no transform: the PIL image


def test_indexing_reports_progress_unless_disabled(tmp_path, imagenet_root, capsys):
    shown = _prepare(tmp_path / "shown", imagenet_root)
    # One bar a split: its description, its total (3 class folders) and the images found.
    err = capsys.readouterr().err
    assert re.search(r"index train class folders: 100%\|.*\| 3/3 .*images=12", err), err
    assert re.search(r"index val class folders: 100%\|.*\| 3/3 .*images=6", err), err
    quiet = _prepare(tmp_path / "quiet", imagenet_root, progress=False)
    assert capsys.readouterr().err == ""
    # Bars only write to stderr: the prepared files are the same bytes.
    assert sorted(p.name for p in shown.iterdir()) == sorted(p.name for p in quiet.iterdir())
    for path in shown.iterdir():
        assert path.read_bytes() == (quiet / path.name).read_bytes()


def test_wrong_class_count(tmp_path, imagenet_root):
    with pytest.raises(DataError, match=r"ILSVRC2012/train: found 3 class folders, expected 1000"):
        _prepare(tmp_path, imagenet_root, expected_classes=None)
    assert not (tmp_path / "prepared" / "imagenet").exists()


def test_train_and_val_class_mismatch(tmp_path, imagenet_root):
    (imagenet_root / "val" / "n02000000").rename(imagenet_root / "val" / "n09999999")
    with pytest.raises(DataError) as info:
        _prepare(tmp_path, imagenet_root)
    message = str(info.value)
    assert "ILSVRC2012/val" in message
    assert "missing n02000000" in message and "extra n09999999" in message


def test_missing_split_folder_and_empty_class(tmp_path, imagenet_root):
    shutil.rmtree(imagenet_root / "val")
    with pytest.raises(DataError, match=r"ILSVRC2012/val: folder not found.*class-folder"):
        _prepare(tmp_path, imagenet_root)
    with pytest.raises(DataError, match="imagenet_dir"):
        prepare_dataset("imagenet", tmp_path / "p", tmp_path / "r", val_size=1)
    write_imagenet_fixture(imagenet_root, WNIDS)
    for image in (imagenet_root / "train" / "n01000000").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"train/n01000000: no images"):
        _prepare(tmp_path, imagenet_root)


def test_ilsvrc_file_names_and_odd_files_index_and_decode(tmp_path):
    """ILSVRC2012's naming (train <wnid>_<number>.JPEG; val ILSVRC2012_val_<8 digits>.JPEG
    sorted into class folders) and its odd files: a greyscale JPEG, a CMYK JPEG and a PNG
    named .JPEG are indexed and decode to RGB tensors of the colours they were written with."""
    wnids = ["n01484850", "n01491361", "n01440764", "n01443537"]  # sorted: 2, 3, 0, 1
    root = write_imagenet_fixture(tmp_path / "ILSVRC2012", wnids, [2, 3, 2, 2], [1, 2, 1, 1],
                                  size=(44, 36), ilsvrc_names=True, class_colours=True,
                                  odd_modes=True)
    # What a copy made on macOS leaves beside each file: AppleDouble metadata, no image.
    for image in [*root.glob("train/n01440764/*.JPEG"), *root.glob("val/*/*.JPEG")]:
        image.with_name(f"._{image.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(4092))
    out = _prepare(tmp_path, root, expected_classes=4)
    test = _rows(out / "test.csv")
    assert [int(r["label"]) for r in test] == [0, 1, 2, 3, 3]  # n01491361 has two
    names = [r["path"].split("/")[2] for r in test]
    assert all(re.fullmatch(r"ILSVRC2012_val_\d{8}\.JPEG", n) for n in names)
    assert sorted(int(n[15:23]) for n in names) == [1, 2, 3, 4, 5]
    train = _rows(out / "train.csv") + _rows(out / "val.csv")
    assert len(train) == 9 and all(
        re.fullmatch(r"train/(n\d{8})/\1_\d+\.JPEG", r["path"]) for r in train)

    imagenet = get_dataset("imagenet")
    with Image.open(root / test[0]["path"]) as first:  # n01440764's first val file
        assert (first.format, first.mode) == ("JPEG", "CMYK")
    for split in ("test", "train", "val"):
        data = load_split(out, split, imagenet.transform(False, 32))
        for i, path in enumerate(data.paths):
            image, label = data[i]
            assert image.shape == (3, 32, 32)
            with Image.open(root / path) as raw:
                kind = (raw.format, raw.mode)
            if kind == ("JPEG", "L"):  # the greyscale file: three equal channels
                assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
                continue
            colour = torch.tensor(imagenet_class_colour(label) / 255.0, dtype=torch.float32)
            assert torch.allclose(image.mean(dim=(1, 2)), colour, atol=0.02), path
