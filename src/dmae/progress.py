"""Progress bars of long work, on stderr: a workflow job writes its stderr to its log."""

from __future__ import annotations

import sys

# tqdm.auto's bar (tqdm.asyncio) calls iter() on its iterable when it is made, and again when
# it is iterated: a DataLoader's second iterator draws another seed from torch's RNG (and
# starts its workers twice), which moved the validation noise. The plain bar iterates once.
from tqdm import tqdm


def progress_bar(*args, **kwargs) -> tqdm:
    """A tqdm bar redrawn every second on a terminal and every 25 s in a log, so that a long
    job's log gets a line at least every half minute without growing by megabytes."""
    kwargs.setdefault("mininterval", 1.0 if sys.stderr.isatty() else 25.0)
    return tqdm(*args, **kwargs)
