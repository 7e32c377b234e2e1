"""IDX files (the MNIST family format), parsed without third-party readers.

Layout: a 4-byte magic ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes,
then the data. Only unsigned bytes (type 0x08) occur in (Fashion-)MNIST: images have magic
0x00000803 (N x rows x cols) and labels 0x00000801 (N).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from ..io import md5_file
from .errors import DataError
from .sources import SourceFile

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_UBYTE = 0x08


def parse_idx(data: bytes, *, expected_magic: int | None = None, source: str = "<bytes>"):
    """Parse IDX bytes into a uint8 array; DataError naming ``source`` on any mismatch."""
    if len(data) < 4:
        raise DataError(f"{source}: too short for an IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"{source}: IDX magic number is 0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != _UBYTE:
        raise DataError(f"{source}: unsupported IDX magic number 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise DataError(
            f"{source}: IDX header declares shape {dims} = {expected} data bytes but the file "
            f"holds {len(data) - header} (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_verified_gz(path: Path, expected: SourceFile) -> tuple[bytes, dict[str, str]]:
    """Decompress ``path`` after checking it is ``expected``; return (content, checksums).

    A file is accepted when its MD5 is the published one, or when the sha256 of its
    decompressed content matches (recompressed copies, e.g. Debian's, differ in MD5 only).
    """
    md5 = md5_file(path)
    try:
        content = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path}: cannot decompress ({err}); the file is truncated or not gzip "
            f"(expected MD5 {expected.md5})"
        ) from err
    sha = hashlib.sha256(content).hexdigest()
    if md5 != expected.md5 and sha != expected.content_sha256:
        raise DataError(
            f"{path}: checksum mismatch: expected MD5 {expected.md5} of the .gz or sha256 "
            f"{expected.content_sha256} of its decompressed content; got MD5 {md5}, "
            f"sha256 {sha}"
        )
    return content, {"md5": md5, "content_sha256": sha}


def read_idx_images(content: bytes, source: str) -> np.ndarray:
    """IDX image bytes -> uint8 array (N, rows, cols)."""
    return parse_idx(content, expected_magic=IMAGES_MAGIC, source=source)


def read_idx_labels(content: bytes, source: str) -> np.ndarray:
    """IDX label bytes -> int64 array (N,)."""
    return parse_idx(content, expected_magic=LABELS_MAGIC, source=source).astype(np.int64)

