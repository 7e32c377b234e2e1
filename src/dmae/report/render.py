"""Tables as files: CSV, GitHub Markdown and booktabs LaTeX.

Markdown and LaTeX show a value with an interval (``columns.interval_columns``) as ``value ±h``,
h the larger of the two sides, the best value of each accuracy/ACR column in bold (every tied
cell, compared as displayed) and "not run" for a missing value. The CSV keeps the numbers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dmae.io import atomic_path
from dmae.report.columns import NOT_RUN, interval_columns

# left-aligned
TEXT_COLUMNS = ("dataset", "method", "sigmas", "run", "certification", "downstream", "source",
                "#params", "extra data")


def default_bold_columns(table: pd.DataFrame) -> list[str]:
    """Accuracy (``r=<radius>``, ``... acc %``) and ACR columns: where the best is marked."""
    return [c for c in _shown_columns(table)
            if c.startswith("r=") or c == "ACR" or c.endswith("acc %")]


def decimals(column: str) -> int | None:
    """Decimals a column's numbers are shown with (None: as they come)."""
    if column.startswith("r=") or column.endswith("%"):
        return 1
    return 3 if column == "ACR" else None


def _format_cell(column: str, value, interval: tuple | None = None) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NOT_RUN
    if isinstance(value, str):
        return value
    places = decimals(column)
    if places is not None:
        text = f"{value:.{places}f}"
        if interval is not None and not any(pd.isna(v) for v in interval):
            # the larger side of the (possibly asymmetric) interval: never understated
            text += f" ±{max(value - interval[0], interval[1] - value):.{places}f}"
        return text
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _shown_columns(table: pd.DataFrame) -> list[str]:
    """The columns a reader sees: interval bounds are folded into their value's cell."""
    bounds = {c for column in table.columns for c in interval_columns(str(column))}
    return [str(c) for c in table.columns if str(c) not in bounds]


def _display(table: pd.DataFrame, bold_columns: Sequence[str] | None
             ) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Headers, formatted cells and bold flags (best displayed value per bold column)."""
    bold_columns = default_bold_columns(table) if bold_columns is None else list(bold_columns)
    headers = _shown_columns(table)
    cells = []
    for _, row in table.iterrows():
        cells.append([_format_cell(c, row[c], tuple(row[b] for b in interval_columns(c))
                                   if interval_columns(c)[0] in table.columns else None)
                      for c in headers])
    bold = [[False] * len(headers) for _ in cells]
    for j, column in enumerate(headers):
        if column not in bold_columns:
            continue
        numbers = {i: _leading_number(row[j]) for i, row in enumerate(cells)}
        numbers = {i: v for i, v in numbers.items() if v is not None}
        if numbers:
            best = max(numbers.values())
            for i, value in numbers.items():
                bold[i][j] = value == best
    return headers, cells, bold


def _leading_number(text: str) -> float | None:
    """The value of a cell as displayed ("63.0 ±4.3" -> 63.0), None if it is no number."""
    try:
        return float(text.split(" ±")[0])
    except ValueError:
        return None


def to_markdown(table: pd.DataFrame, bold_columns: Sequence[str] | None = None) -> str:
    """GitHub Markdown table; best cells as ``**x**``."""
    headers, cells, bold = _display(table, bold_columns)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if h in TEXT_COLUMNS else "---:" for h in headers) + "|"]
    for row, flags in zip(cells, bold, strict=True):
        shown = [f"**{c}**" if b else c for c, b in zip(row, flags, strict=True)]
        lines.append("| " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame, bold_columns: Sequence[str] | None = None) -> str:
    """A booktabs ``tabular``; best cells as ``\\textbf{x}``."""
    headers, cells, bold = _display(table, bold_columns)
    align = "".join("l" if h in TEXT_COLUMNS else "r" for h in headers)
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(latex_escape(h) for h in headers) + " \\\\", "\\midrule"]
    for row, flags in zip(cells, bold, strict=True):
        shown = [f"\\textbf{{{latex_escape(c)}}}" if b else latex_escape(c)
                 for c, b in zip(row, flags, strict=True)]
        lines.append(" & ".join(shown) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, paths: Sequence[str | os.PathLike] | str | os.PathLike,
                bold_columns: Sequence[str] | None = None) -> None:
    """Write ``table`` to each path, the format chosen by suffix (.csv, .md, .tex), atomically.

    The CSV keeps numbers (6 decimals) with their interval columns, no bold markers.
    """
    for path in [paths] if isinstance(paths, str | os.PathLike) else paths:
        path = Path(path)
        if path.suffix == ".csv":
            # 6 decimals: 72.24, not the float sum's 72.24000000000001
            text = table.round(6).to_csv(index=False)
        elif path.suffix == ".md":
            text = to_markdown(table, bold_columns)
        elif path.suffix == ".tex":
            text = to_latex(table, bold_columns)
        else:
            raise ValueError(f"{path}: unknown table format (use .csv, .md or .tex)")
        with atomic_path(path) as tmp:
            tmp.write_text(text)
