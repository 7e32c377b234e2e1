"""Safe extraction of tar archives.

Every member is validated before anything is written: absolute paths, ``..`` components,
links and special files are refused. Extraction then uses tarfile's ``data`` filter as a
second guard.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..progress import progress_bar
from .errors import DataError

log = logging.getLogger(__name__)


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Raise DataError unless ``member`` is a plain file or folder with a safe relative name."""
    name = member.name
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise DataError(f"{archive}: refusing member {name!r}: absolute path")
    if ".." in posix.parts or ".." in windows.parts:
        raise DataError(f"{archive}: refusing member {name!r}: '..' path component")
    if member.issym() or member.islnk():
        raise DataError(f"{archive}: refusing member {name!r}: link to {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing member {name!r}: not a regular file or folder")


def safe_extract(archive: Path, dest: Path, *, progress: bool = True) -> list[str]:
    """Extract tar archive ``archive`` into folder ``dest``; return the member names.

    Raises DataError (naming the archive) for an unsafe member or a truncated/corrupt
    archive; nothing is written when a member is unsafe, since all are checked first.
    ``progress`` shows a bar of the bytes extracted on stderr.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()  # reads the whole archive: catches truncation early
            for member in members:
                check_member(member, archive)
            dest.mkdir(parents=True, exist_ok=True)
            with progress_bar(total=sum(m.size for m in members),
                              desc=f"extract {archive.name}", unit="B", unit_scale=True,
                              disable=not progress, dynamic_ncols=True) as bar:
                tar.extractall(dest, members=_counted(members, bar), filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{archive}: cannot read archive ({err}); truncated or corrupt") from err
    log.debug("extracted %d members of %s into %s", len(members), archive, dest)
    return [m.name for m in members]


def _counted(members: Iterable[tarfile.TarInfo], bar) -> Iterator[tarfile.TarInfo]:
    """``members``, adding each one's size to ``bar`` once extractall, which asks for the
    next member only after writing this one, has extracted it."""
    for member in members:
        yield member
        bar.update(member.size)
