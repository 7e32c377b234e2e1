"""Downloading and checksum verification of source files.

A download goes to ``<file>.part`` beside its final path and is renamed only after its MD5
matched, so the raw folder never holds a file that looks complete but is not.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..io import md5_file
from ..progress import progress_bar
from .errors import DataError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def join_url(base: str, filename: str) -> str:
    """URL of ``filename`` under ``base``; a ``base`` already ending in the file name is kept."""
    if base.rstrip("/").endswith("/" + filename):
        return base
    return base.rstrip("/") + "/" + filename


def check_md5(path: Path, expected: str) -> None:
    """Raise DataError naming ``path`` unless its MD5 is ``expected``."""
    actual = md5_file(path)
    if actual != expected:
        raise DataError(f"{path}: checksum mismatch: expected MD5 {expected}, got {actual}")


def download(url: str, dest: Path, *, md5: str, timeout: float = 60.0,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5; return ``dest``.

    Any failure (HTTP error, refused connection, short read, checksum mismatch) raises one
    DataError naming the URL, the expected MD5 and the exact path to place the file by hand;
    the ``.part`` file is always removed. ``progress`` shows a bar of the bytes received on
    stderr when the server gives the size.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s -> %s", url, dest)
    try:
        _fetch(url, part, timeout, progress)
        actual = md5_file(part)
        if actual != md5:
            raise DataError(f"checksum mismatch: expected MD5 {md5}, got {actual}")
        os.replace(part, dest)
    except (DataError, OSError, ValueError, http.client.HTTPException) as err:
        reason = _describe(err)
        raise DataError(
            f"could not download {url}: {reason}. Download it by hand and place it at "
            f"{dest} (expected MD5 {md5}), then run again."
        ) from err
    finally:
        part.unlink(missing_ok=True)
    return dest


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``part`` with a byte progress bar when the size is known."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as fh:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with progress_bar(
            total=total, unit="B", unit_scale=True, desc=f"download {part.name[:-5]}",
            disable=not progress or total is None, dynamic_ncols=True
        ) as bar:
            while block := resp.read(_CHUNK):
                fh.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise DataError(f"short read: got {part.stat().st_size} of {total} bytes")


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"connection failed ({err.reason})"
    return str(err) or type(err).__name__
