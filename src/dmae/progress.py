"""Progress bars of long work, on stderr: a workflow job writes its stderr to its log."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(*args, **kwargs) -> tqdm:
    """A tqdm bar redrawn every second on a terminal and every 25 s in a log, so that a long
    job's log gets a line at least every half minute without growing by megabytes."""
    kwargs.setdefault("mininterval", 1.0 if sys.stderr.isatty() else 25.0)
    return tqdm(*args, **kwargs)
