"""IDX and CIFAR-binary parsers on small files written in the real formats."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
from data_fixtures import encode_cifar_batch, encode_idx

from dmae.data import DataError, SourceFile, parse_cifar_batch, parse_idx
from dmae.data.idx import read_idx_images, read_idx_labels, read_verified_gz
from dmae.io import md5_file


def test_idx_round_trip_with_header_written_by_hand():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = struct.pack(">IIII", 0x00000803, 2, 3, 4) + images.tobytes()
    assert encode_idx(images) == data
    np.testing.assert_array_equal(read_idx_images(data, "x"), images)
    labels = read_idx_labels(struct.pack(">II", 0x00000801, 3) + bytes([7, 0, 9]), "y")
    assert labels.dtype == np.int64 and labels.tolist() == [7, 0, 9]


def test_idx_wrong_magic_and_truncation_name_the_source():
    data = encode_idx(np.zeros((5, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"imgs\.idx.*magic.*0x00000801"):
        parse_idx(data, expected_magic=0x00000801, source="imgs.idx")
    with pytest.raises(DataError, match=r"imgs\.idx.*\(5, 2, 2\).*20.*19"):
        parse_idx(data[:-1], source="imgs.idx")
    with pytest.raises(DataError, match="imgs.idx"):
        parse_idx(data + b"\0", source="imgs.idx")


def _gz_fixture(tmp_path, name="train-images-idx3-ubyte.gz"):
    content = encode_idx(np.full((3, 2, 2), 7, np.uint8))
    path = tmp_path / name
    path.write_bytes(gzip.compress(content, mtime=0))
    spec = SourceFile(name, md5_file(path), hashlib.sha256(content).hexdigest())
    return path, content, spec


def test_verified_gz_accepts_md5_or_recompressed_content(tmp_path):
    path, content, spec = _gz_fixture(tmp_path)
    assert read_verified_gz(path, spec)[0] == content
    # A recompressed copy has another MD5 but the same decompressed sha256.
    path.write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    assert md5_file(path) != spec.md5
    got, sums = read_verified_gz(path, spec)
    assert got == content and sums["content_sha256"] == spec.content_sha256


def test_verified_gz_checksum_mismatch_names_file_and_both_checksums(tmp_path):
    path, _, spec = _gz_fixture(tmp_path)
    path.write_bytes(gzip.compress(encode_idx(np.zeros((3, 2, 2), np.uint8)), mtime=0))
    with pytest.raises(DataError) as info:
        read_verified_gz(path, spec)
    message = str(info.value)
    assert str(path) in message and spec.md5 in message and spec.content_sha256 in message
    assert md5_file(path) in message


def test_verified_gz_truncated_file(tmp_path):
    path, _, spec = _gz_fixture(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=rf"{path.name}.*truncated"):
        read_verified_gz(path, spec)


def test_cifar_record_layout():
    # One 2x2 record: label 3, red plane 10..13, green 20..23, blue 30..33 (row-major).
    record = bytes([3, 10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33])
    images, labels = parse_cifar_batch(record * 2, image_shape=(2, 2, 3))
    assert images.shape == (2, 2, 2, 3) and labels.tolist() == [3, 3]
    assert images[0, 0, 1].tolist() == [11, 21, 31]  # row 0, column 1
    assert images[0, 1, 0].tolist() == [12, 22, 32]  # row 1, column 0
    assert encode_cifar_batch(images, labels) == record * 2


def test_cifar_truncated_batch_names_source():
    data = encode_cifar_batch(np.zeros((2, 32, 32, 3), np.uint8), np.array([1, 2]))
    with pytest.raises(DataError, match=r"data_batch_1\.bin.*3073-byte records"):
        parse_cifar_batch(data[:-5], source="data_batch_1.bin")
