"""Safe tar extraction: unsafe members are refused before anything is written."""

from __future__ import annotations

import io
import os
import re
import tarfile

import pytest
from data_fixtures import cifar_member_bytes, write_tar_gz

from dmae.data import CIFAR10, Cifar10Spec, DataError, SourceFile, prepare_dataset, safe_extract
from dmae.io import md5_file


def _tar_with(path, *extra: tarfile.TarInfo):
    """A tar.gz with one safe file first, then the given members."""
    with tarfile.open(path, "w:gz") as tar:
        safe = tarfile.TarInfo("ok/first.txt")
        safe.size = 2
        tar.addfile(safe, io.BytesIO(b"ok"))
        for info in extra:
            data = b"evil" if info.isfile() else None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tarfile.TarInfo("../evil.txt"), r"'\.\.'"),
        (tarfile.TarInfo("ok/../../evil.txt"), r"'\.\.'"),
        (None, "absolute path"),  # filled in below: needs tmp_path
        (_link("ok/link", "/etc/passwd"), "link"),
        (_link("ok/hard", "ok/first.txt", tarfile.LNKTYPE), "link"),
        (_link("ok/fifo", "", tarfile.FIFOTYPE), "not a regular file"),
    ],
)
def test_unsafe_member_is_refused_and_nothing_written(tmp_path, member, reason):
    if member is None:
        member = tarfile.TarInfo(str(tmp_path / "abs_evil.txt"))
    archive = _tar_with(tmp_path / "bad.tar.gz", member)
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(DataError, match=rf"bad\.tar\.gz.*{reason}"):
        safe_extract(archive, dest)
    assert not dest.exists()  # validated before extraction: not even the safe file
    assert sorted(os.listdir(tmp_path)) == ["bad.tar.gz"]


def test_safe_archive_extracts(tmp_path):
    archive = _tar_with(tmp_path / "good.tar.gz")
    assert safe_extract(archive, tmp_path / "dest") == ["ok/first.txt"]
    assert (tmp_path / "dest" / "ok" / "first.txt").read_bytes() == b"ok"


def test_extraction_reports_progress_unless_disabled(tmp_path, capsys):
    archive = _tar_with(tmp_path / "good.tar.gz")
    safe_extract(archive, tmp_path / "shown")
    # Counted in bytes: the one member's 2 of 2.
    err = capsys.readouterr().err
    assert re.search(r"extract good\.tar\.gz: 100%\|.*\| 2\.00/2\.00 ", err), err
    assert safe_extract(archive, tmp_path / "quiet", progress=False) == ["ok/first.txt"]
    assert capsys.readouterr().err == ""
    assert (tmp_path / "quiet" / "ok" / "first.txt").read_bytes() == b"ok"


def test_truncated_archive(tmp_path):
    archive = write_tar_gz(tmp_path / "t.tar.gz", cifar_member_bytes(per_batch=2, n_test=2))
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"t\.tar\.gz.*truncated or corrupt"):
        safe_extract(archive, tmp_path / "dest")


def test_prepare_refuses_cifar_archive_with_traversal(tmp_path):
    """The real preparation path refuses the archive even when its MD5 matches the spec."""
    source = tmp_path / "src"
    source.mkdir()
    archive = _tar_with(source / CIFAR10.archive.name, tarfile.TarInfo("../escaped.bin"))
    spec = Cifar10Spec(archive=SourceFile(archive.name, md5_file(archive)))
    prepared = tmp_path / "prepared"
    with pytest.raises(DataError, match=r"refusing member '\.\./escaped\.bin'"):
        prepare_dataset(
            "cifar10", prepared, tmp_path / "raw", val_size=1, source_dir=source, spec=spec
        )
    assert not (tmp_path / "escaped.bin").exists()
    assert list(prepared.iterdir()) == []  # the scratch folder is gone too
