"""How the report's tables name their columns and mark cells without a number.

Certified accuracies are in percent, in columns named ``r=<radius>`` (or ending in ``%``);
``ACR`` is the average certified radius. Each of these values may carry its 95% interval in
the columns ``<column> lo`` and ``<column> hi`` (``interval_columns``).
"""

from __future__ import annotations

from collections.abc import Sequence

NOT_RUN = "not run"  # a run whose certification TSV does not exist yet
NOT_REPORTED = "—"  # a number the paper (or a checkpoint's metadata) does not give

LO, HI = " lo", " hi"  # suffixes of a column's interval bounds


def radius_column(r: float) -> str:
    return f"r={float(r):g}"


def interval_columns(column: str) -> tuple[str, str]:
    """Names of the columns holding ``column``'s 95% interval."""
    return column + LO, column + HI


def value_columns(radii: Sequence[float]) -> list[str]:
    """The columns that carry an interval: certified accuracy per radius, then the ACR."""
    return [*map(radius_column, radii), "ACR"]
