"""Safe extraction of tar archives.

Every member is validated before anything is written: absolute paths, ``..`` components,
links and special files are refused. Extraction then uses tarfile's ``data`` filter as a
second guard.
"""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path, PurePosixPath, PureWindowsPath

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


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """Extract tar archive ``archive`` into folder ``dest``; return the member names.

    Raises DataError (naming the archive) for an unsafe member or a truncated/corrupt
    archive; nothing is written when a member is unsafe, since all are checked first.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()  # reads the whole archive: catches truncation early
            for member in members:
                check_member(member, archive)
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{archive}: cannot read archive ({err}); truncated or corrupt") from err
    log.debug("extracted %d members of %s into %s", len(members), archive, dest)
    return [m.name for m in members]
