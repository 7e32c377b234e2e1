"""Index an ILSVRC2012 folder in class-folder layout (``<split>/<wnid>/*.JPEG``).

Images are not copied: each split becomes a list of (path relative to the ImageNet root,
label), with labels given by the position of the wnid in SORTED order, the order every
published certification subset uses.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError


def list_classes(split_dir: Path) -> list[str]:
    """Sorted names of the class folders of ``split_dir`` (hidden entries ignored)."""
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir}: folder not found; expected an ImageNet split in class-folder "
            "layout (<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG)"
        )
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_classes(
    split_dir: Path, found: list[str], expected_count: int, reference: list[str] | None = None
) -> None:
    """Raise DataError unless ``found`` has ``expected_count`` classes (equal to ``reference``)."""
    if len(found) != expected_count:
        raise DataError(
            f"{split_dir}: found {len(found)} class folders, expected {expected_count}"
            + (f" (first: {', '.join(found[:5])})" if found else "")
        )
    if reference is not None and found != reference:
        missing = sorted(set(reference) - set(found))
        extra = sorted(set(found) - set(reference))
        raise DataError(
            f"{split_dir}: class folders differ from the training set's: "
            f"missing {_preview(missing)}; extra {_preview(extra)}"
        )


def index_split(
    root: Path, split_dir: Path, classes: list[str], extensions: tuple[str, ...]
) -> list[tuple[str, int]]:
    """(relative path, label) for every image of ``split_dir``, in a deterministic order."""
    allowed = {e.lower() for e in extensions}
    entries: list[tuple[str, int]] = []
    for label, wnid in enumerate(classes):
        class_dir = split_dir / wnid
        files = sorted(
            p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in allowed
        )
        if not files:
            raise DataError(
                f"{class_dir}: no images (expected files ending in {', '.join(sorted(allowed))})"
            )
        entries.extend((p.relative_to(root).as_posix(), label) for p in files)
    return entries


def _preview(names: list[str], limit: int = 10) -> str:
    if not names:
        return "none"
    more = f" ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
