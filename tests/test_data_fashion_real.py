"""The real Fashion-MNIST files from Debian's package, when installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dmae.data import FASHION_MNIST, load_split, prepare_dataset

DEBIAN = Path(FASHION_MNIST.system_dirs[0])


@pytest.mark.skipif(
    not all((DEBIAN / f.name).is_file() for f in FASHION_MNIST.files),
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN})",
)
def test_prepare_debian_fashion_mnist(tmp_path):
    raw = tmp_path / "raw"
    out = prepare_dataset("fashion-mnist", tmp_path / "prepared", raw, val_size=5000)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 55_000, "val": 5_000, "test": 10_000}
    per_class = np.add(manifest["class_counts"]["train"], manifest["class_counts"]["val"])
    assert per_class.tolist() == [6_000] * 10
    assert manifest["class_counts"]["test"] == [1_000] * 10
    assert {s["content_sha256"] for s in manifest["sources"]} == {
        f.content_sha256 for f in FASHION_MNIST.files
    }
    assert {s["origin"] for s in manifest["sources"]} == {"system"}
    assert not raw.exists()  # nothing downloaded
    test = load_split(out, "test")
    assert len(test) == 10_000 and test[0][0].shape == (1, 28, 28)
    assert test.targets[:5].tolist() == [9, 2, 1, 1, 6]  # the published test-set start
