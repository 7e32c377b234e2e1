"""Compare two runs' tables cell by cell: identical, within the stated uncertainty, or beyond.

A run's tables (``results/<name>/tables/*.csv``) state a 95% interval beside every certified
accuracy and ACR (``<column> lo`` / ``<column> hi``), which Markdown shows as ``value ±h``, h
the larger side. Two values of such a cell agree *within the uncertainty* when each lies
inside the other's stated interval ``value ± h``: ``|a - b| <= min(h_a, h_b)``. (The raw
Clopper-Pearson bounds would not do: 1 of 500 images has a lower bound above 0, so one image
more or less at an accuracy near 0 would count as beyond.) Cells without an interval (image
counts, validation accuracies, the epoch chosen) are reported when they differ but decide
nothing, except ``images``: runs that certified different images do not measure the same
thing. A row, table or measured column one run lacks is a difference beyond the uncertainty;
a column without an interval that one run lacks (added to the report since the other run's
tables were made) is reported and decides nothing. When only one run states a cell's
interval (tables made before intervals were stated), its h serves both.

On one machine, and on any x86-64 machine of the same CPU vendor with ``runtime.cpu_isa: avx2``,
a rerun of the same commit gives identical cells; another vendor's CPU, GPU runs and changed
code get the uncertainty check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dmae.report.columns import HI, LO, interval_columns
from dmae.report.registry import compared_tables

DECIDING_WITHOUT_INTERVAL = ("images",)

IDENTICAL, WITHIN, BEYOND, DIFFERENT, MISSING = (
    "identical", "within", "beyond", "different", "missing")


@dataclass(frozen=True)
class Cell:
    table: str
    row: str
    column: str
    a: str
    b: str
    verdict: str  # one of IDENTICAL, WITHIN, BEYOND, DIFFERENT (no interval), MISSING
    note: str = ""


@dataclass
class Comparison:
    run_a: Path
    run_b: Path
    cells: list[Cell] = field(default_factory=list)

    @property
    def beyond_uncertainty(self) -> list[Cell]:
        """Cells that differ by more than their stated uncertainty (or exist in one run)."""
        return [c for c in self.cells if c.verdict in (BEYOND, MISSING)]

    def count(self, verdict: str) -> int:
        return sum(c.verdict == verdict for c in self.cells)


def tables_dir(run: Path) -> Path:
    """``results/<name>`` or its ``tables/`` folder, whichever was given."""
    run = Path(run)
    folder = run if run.name == "tables" or not (run / "tables").is_dir() else run / "tables"
    if not folder.is_dir():
        raise FileNotFoundError(f"{run}: no such results folder (expected results/<name> or "
                                "its tables/ folder)")
    return folder


def _read(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / f"{name}.csv"
    # every cell as text: a value is compared as written, so "identical" means byte-equal
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _judge(column: str, a: pd.Series, b: pd.Series) -> tuple[str, str]:
    if a[column] == b[column]:
        return IDENTICAL, ""
    lo, hi = interval_columns(column)
    stated = [lo in row.index and hi in row.index for row in (a, b)]
    if not any(stated):
        if column in DECIDING_WITHOUT_INTERVAL:
            return BEYOND, "a different number of images"
        return DIFFERENT, "no stated uncertainty"
    va, vb = _number(a[column]), _number(b[column])
    ha = max(va - _number(a[lo]), _number(a[hi]) - va) if stated[0] else math.nan
    hb = max(vb - _number(b[lo]), _number(b[hi]) - vb) if stated[1] else math.nan
    # a run from before the intervals were stated is judged by the other run's
    ha, hb = (hb if math.isnan(ha) else ha), (ha if math.isnan(hb) else hb)
    if any(math.isnan(v) for v in (va, vb, ha, hb)):
        return BEYOND, "one run has no value"
    note = f"|A - B| = {abs(va - vb):.4g}, A ±{ha:.4g}, B ±{hb:.4g}"
    return (WITHIN if abs(va - vb) <= min(ha, hb) else BEYOND), note


def compare_runs(run_a: Path, run_b: Path) -> Comparison:
    """Every cell of the tables both runs should have, judged (see the module docstring)."""
    folders = tables_dir(run_a), tables_dir(run_b)
    comparison = Comparison(Path(run_a), Path(run_b))
    for name, keys in compared_tables().items():
        a, b = (_read(folder, name) for folder in folders)
        if a is None and b is None:
            continue
        if a is None or b is None:
            missing_in = folders[0] if a is None else folders[1]
            comparison.cells.append(Cell(name, "", "", "", "", MISSING,
                                         f"{missing_in / (name + '.csv')} does not exist"))
            continue
        a_rows = {" ".join(row[list(keys)]): row for _, row in a.iterrows()}
        b_rows = {" ".join(row[list(keys)]): row for _, row in b.iterrows()}
        for row_name in dict.fromkeys([*a_rows, *b_rows]):
            if row_name not in a_rows or row_name not in b_rows:
                side = "A" if row_name not in a_rows else "B"
                comparison.cells.append(Cell(name, row_name, "", "", "", MISSING,
                                             f"run {side} has no such row"))
                continue
            ra, rb = a_rows[row_name], b_rows[row_name]
            columns = [c for c in dict.fromkeys([*a.columns, *b.columns])
                       if c not in keys and not c.endswith((LO, HI))]
            for column in columns:
                if column not in ra.index or column not in rb.index:
                    # a measurement one run lacks is missing; a descriptive column added
                    # since the other run's tables were made decides nothing
                    measured = (interval_columns(column)[0] in (*a.columns, *b.columns)
                                or column in DECIDING_WITHOUT_INTERVAL)
                    comparison.cells.append(Cell(
                        name, row_name, column, ra.get(column, ""), rb.get(column, ""),
                        MISSING if measured else DIFFERENT, "a column one run lacks"))
                    continue
                verdict, note = _judge(column, ra, rb)
                comparison.cells.append(Cell(name, row_name, column, ra[column], rb[column],
                                             verdict, note))
    if not comparison.cells:
        raise FileNotFoundError(f"{folders[0]} and {folders[1]}: no tables to compare "
                                f"(expected {', '.join(n + '.csv' for n in compared_tables())})")
    return comparison


def format_comparison(comparison: Comparison, show: str = "different") -> str:
    """A fixed-width listing of the cells (all, or those not identical) and a summary line."""
    cells = [c for c in comparison.cells if show == "all" or c.verdict != IDENTICAL]
    lines = [f"A: {comparison.run_a}", f"B: {comparison.run_b}", ""]
    if cells:
        widths = [max(len(getattr(c, f)) for c in cells) for f in ("table", "row", "column")]
        header = ("table", "row", "column")
        widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
                     + "  A          B          verdict")
        for c in cells:
            fields = (c.table, c.row, c.column)
            lines.append("  ".join(f.ljust(w) for f, w in zip(fields, widths, strict=True))
                         + f"  {c.a:<10} {c.b:<10} {c.verdict}"
                         + (f" ({c.note})" if c.note else ""))
        lines.append("")
    total = len(comparison.cells)
    lines.append(f"{total} cells: {comparison.count(IDENTICAL)} identical, "
                 f"{comparison.count(WITHIN)} within the 95% intervals, "
                 f"{comparison.count(DIFFERENT)} different without a stated uncertainty, "
                 f"{len(comparison.beyond_uncertainty)} beyond the uncertainty or missing")
    return "\n".join(lines) + "\n"
