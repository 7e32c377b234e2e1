"""Certified-accuracy tables as CSV, Markdown and LaTeX.

Certified accuracies are in percent, columns named ``r=<radius>``; ``ACR`` is the average
certified radius. Markdown and LaTeX show the best value of each accuracy/ACR column in bold
(every tied cell, compared as displayed) and "not run" for runs whose TSV does not exist yet.
The LaTeX uses booktabs rules.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dmae.io import atomic_path
from dmae.report.analysis import (
    Run,
    accuracy_by_sigma,
    as_runs,
    average_certified_radius,
    best_over_sigma,
    certified_accuracy,
    counts,
    load,
)

NOT_RUN = "not run"
NOT_REPORTED = "—"


def radius_column(r: float) -> str:
    return f"r={float(r):g}"


def _dataset_runs(runs: Sequence, dataset: str) -> list[Run]:
    selected = [run for run in as_runs(runs) if run.dataset == dataset]
    if not selected:
        raise ValueError(f"no runs for dataset {dataset!r}")
    return selected


def _methods(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys(run.method for run in runs))  # first-seen order


def per_sigma_table(runs: Sequence, dataset: str, radii: Sequence[float]) -> pd.DataFrame:
    """One row per (method, sigma): image counts, certified accuracy (%) per radius and ACR.

    Runs not done yet keep their row, with missing values.
    """
    selected = _dataset_runs(runs, dataset)
    methods = _methods(selected)
    rows = []
    for run in sorted(selected, key=lambda r: (methods.index(r.method), r.sigma)):
        row: dict = {"method": run.display, "sigma": run.sigma}
        if run.done:
            df = load(run.tsv)
            row.update(counts(df))
            acc = certified_accuracy(df, radii)
            row.update({radius_column(r): 100 * acc[float(r)] for r in radii})
            row["ACR"] = average_certified_radius(df)
        else:
            row.update({"images": pd.NA, "correct": pd.NA, "abstained": pd.NA})
            row.update({radius_column(r): math.nan for r in radii})
            row["ACR"] = math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("images", "correct", "abstained"):
        table[column] = table[column].astype("Int64")
    return table


def best_sigma_table(runs: Sequence, dataset: str, radii: Sequence[float]) -> pd.DataFrame:
    """One row per method: for each radius the best certified accuracy (%) over its sigmas.

    ``ACR`` is the best ACR over sigmas; ``sigmas`` lists the finished runs the row is taken
    over (a method with none shows missing values).
    """
    selected = _dataset_runs(runs, dataset)
    rows = []
    for method in _methods(selected):
        method_runs = [run for run in selected if run.method == method]
        done = [run for run in method_runs if run.done]
        row: dict = {"method": method_runs[0].display,
                     "sigmas": ",".join(f"{r.sigma:g}" for r in done)}
        curves = accuracy_by_sigma(method_runs, radii)
        if done:
            best = best_over_sigma(curves)
            row.update({radius_column(r): 100 * best[float(r)] for r in radii})
            row["ACR"] = max(average_certified_radius(load(run.tsv)) for run in done)
        else:
            row.update({radius_column(r): math.nan for r in radii})
            row["ACR"] = math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def paper_comparison_table(runs: Sequence, dataset: str, reference_csv: str | os.PathLike,
                           sigma: str | float = "best") -> pd.DataFrame:
    """Published vs reproduced certified accuracy (%) for each method of ``runs`` on a dataset.

    ``sigma="best"`` compares the paper's best-over-sigma table with this project's envelope; a
    number compares a per-sigma table (Cohen et al.'s) with the run at that sigma. The radii are
    the published ones. Cells read "not run" where the run is missing and "—" where the paper has
    no number for the method. Columns: method, radius, paper %, this run %.
    """
    reference = pd.read_csv(reference_csv, dtype={"sigma": str})
    reference = reference[(reference["dataset"] == dataset)
                          & reference["sigma"].map(lambda s: _same_sigma(s, sigma))]
    if reference.empty:
        raise ValueError(f"reference_results has no {dataset!r} numbers for sigma={sigma}")
    radii = sorted(reference["radius"].astype(float).unique())
    published = {(row.method, float(row.radius)): float(row.certified_accuracy_pct)
                 for row in reference.itertuples()}
    selected = _dataset_runs(runs, dataset)
    rows = []
    for method in _methods(selected):
        method_runs = [run for run in selected if run.method == method
                       and (sigma == "best" or _same_sigma(run.sigma, sigma))]
        curves = accuracy_by_sigma(method_runs, radii)
        ours = None if curves.empty else best_over_sigma(curves)
        first = next(run for run in selected if run.method == method)
        for r in radii:
            paper = published.get((first.paper, r))
            rows.append({
                "method": first.display,
                "radius": r,
                "paper %": NOT_REPORTED if paper is None else f"{paper:.1f}",
                "this run %": NOT_RUN if ours is None else f"{100 * ours[r]:.1f}",
            })
    return pd.DataFrame(rows, columns=["method", "radius", "paper %", "this run %"])


def _same_sigma(a, b) -> bool:
    if str(a) == "best" or str(b) == "best":
        return str(a) == str(b)
    return math.isclose(float(a), float(b))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def default_bold_columns(table: pd.DataFrame) -> list[str]:
    """Accuracy and ACR columns: where the best value is marked."""
    return [c for c in table.columns if c.startswith("r=") or c == "ACR"]


def _format_cell(column: str, value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NOT_RUN
    if isinstance(value, str):
        return value
    if column.startswith("r="):
        return f"{value:.1f}"
    if column == "ACR":
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _display(table: pd.DataFrame, bold_columns: Sequence[str] | None
             ) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Headers, formatted cells and bold flags (best displayed value per bold column)."""
    bold_columns = default_bold_columns(table) if bold_columns is None else list(bold_columns)
    headers = [str(c) for c in table.columns]
    cells = [[_format_cell(c, v) for c, v in zip(headers, row, strict=True)]
             for row in table.itertuples(index=False)]
    bold = [[False] * len(headers) for _ in cells]
    for j, column in enumerate(headers):
        if column not in bold_columns:
            continue
        numbers = {i: float(row[j]) for i, row in enumerate(cells) if _is_number(row[j])}
        if numbers:
            best = max(numbers.values())
            for i, value in numbers.items():
                bold[i][j] = value == best
    return headers, cells, bold


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_markdown(table: pd.DataFrame, bold_columns: Sequence[str] | None = None) -> str:
    """GitHub Markdown table; best cells as ``**x**``."""
    headers, cells, bold = _display(table, bold_columns)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if h in ("method", "sigmas") else "---:" for h in headers) + "|"]
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
    align = "".join("l" if h in ("method", "sigmas") else "r" for h in headers)
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

    The CSV keeps full-precision numbers and no bold markers.
    """
    for path in [paths] if isinstance(paths, str | os.PathLike) else paths:
        path = Path(path)
        if path.suffix == ".csv":
            text = table.to_csv(index=False)
        elif path.suffix == ".md":
            text = to_markdown(table, bold_columns)
        elif path.suffix == ".tex":
            text = to_latex(table, bold_columns)
        else:
            raise ValueError(f"{path}: unknown table format (use .csv, .md or .tex)")
        with atomic_path(path) as tmp:
            tmp.write_text(text)
