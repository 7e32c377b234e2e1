"""Certified-accuracy tables as CSV, Markdown and LaTeX.

Certified accuracies are in percent, columns named ``r=<radius>`` (or ending in ``%``); ``ACR``
is the average certified radius. Each certified accuracy and ACR has its 95% interval over the
certified images in the columns ``<column> lo`` and ``<column> hi`` (Clopper-Pearson; a
t-interval for the ACR); Markdown and LaTeX show it as ``value ±h``, h the larger of the two
sides. They also show the best value of each accuracy/ACR column in bold (every tied cell,
compared as displayed) and "not run" for runs whose TSV does not exist yet; "—" marks a number
the paper does not report. The LaTeX uses booktabs rules.

Tables: ``per_sigma_table`` (one row per method and sigma), ``best_sigma_table`` (best over
sigma per method), ``paper_comparison_table`` (the published numbers of every dataset in
reference_results.csv next to this project's) and ``base_classifier_table`` (the fine-tuned
checkpoints' validation metrics and their certification at radius 0).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dmae.io import atomic_path, read_json
from dmae.report.analysis import (
    Run,
    accuracy_by_sigma,
    acr_interval,
    as_runs,
    average_certified_radius,
    best_over_sigma,
    certification_method,
    certified_accuracy,
    certified_accuracy_intervals,
    counts,
    forward_passes,
    load,
)

NOT_RUN = "not run"
NOT_REPORTED = "—"

# The published numbers (DMAE Tables 1 and 3, Cohen et al.'s per-sigma tables).
REFERENCE_RESULTS = Path(__file__).resolve().parents[1] / "reference_results.csv"


def radius_column(r: float) -> str:
    return f"r={float(r):g}"


LO, HI = " lo", " hi"  # suffixes of a column's interval bounds


def interval_columns(column: str) -> tuple[str, str]:
    """Names of the columns holding ``column``'s 95% interval."""
    return column + LO, column + HI


def _with_interval(row: dict, column: str, value: float, interval: tuple[float, float],
                   scale: float = 1.0) -> None:
    lo, hi = interval_columns(column)
    row[column], row[lo], row[hi] = scale * value, scale * interval[0], scale * interval[1]


def _accuracy_cells(df: pd.DataFrame, radii: Sequence[float]) -> dict:
    """Certified accuracy (%) at each radius and the ACR, each with its interval."""
    acc = certified_accuracy(df, radii)
    bounds = certified_accuracy_intervals(df, radii)
    row: dict = {}
    for r in radii:
        _with_interval(row, radius_column(r), acc[float(r)],
                       tuple(bounds.loc[float(r)]), scale=100)
    _with_interval(row, "ACR", average_certified_radius(df), acr_interval(df))
    return row


def _value_columns(radii: Sequence[float]) -> list[str]:
    """The columns that carry an interval: certified accuracy per radius, then the ACR."""
    return [*map(radius_column, radii), "ACR"]


def _missing_cells(columns: Sequence[str]) -> dict:
    return {c: math.nan for column in columns for c in (column, *interval_columns(column))}


def _dataset_runs(runs: Sequence, dataset: str) -> list[Run]:
    selected = [run for run in as_runs(runs) if run.dataset == dataset]
    if not selected:
        raise ValueError(f"no runs for dataset {dataset!r}")
    return selected


def _methods(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys(run.method for run in runs))  # first-seen order


def per_sigma_table(runs: Sequence, dataset: str, radii: Sequence[float]) -> pd.DataFrame:
    """One row per (method, sigma): image counts, the certification method and its forward
    passes per image (n0 + estimation samples), certified accuracy (%) per radius and ACR.

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
            passes = forward_passes(df)
            row.update({"certification": certification_method(run.tsv)["name"],
                        "passes/image": NOT_REPORTED if passes is None else round(passes)})
            row.update(_accuracy_cells(df, radii))
        else:
            row.update({"images": pd.NA, "correct": pd.NA, "abstained": pd.NA,
                        "certification": pd.NA, "passes/image": pd.NA})
            row.update(_missing_cells(_value_columns(radii)))
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("images", "correct", "abstained"):
        table[column] = table[column].astype("Int64")
    return table


def best_sigma_table(runs: Sequence, dataset: str, radii: Sequence[float]) -> pd.DataFrame:
    """One row per method: for each radius the best certified accuracy (%) over its sigmas.

    ``ACR`` is the best ACR over sigmas; ``sigmas`` lists the finished runs the row is taken
    over (a method with none shows missing values). A cell's interval is that of the sigma it
    comes from (which ignores that the best of several was picked).
    """
    selected = _dataset_runs(runs, dataset)
    rows = []
    for method in _methods(selected):
        method_runs = [run for run in selected if run.method == method]
        done = [run for run in method_runs if run.done]
        row: dict = {"method": method_runs[0].display,
                     "sigmas": ",".join(f"{r.sigma:g}" for r in done)}
        columns = _value_columns(radii)
        row.update(_missing_cells(columns))
        for run in done:  # keep each column's best value, with its own interval
            cells = _accuracy_cells(load(run.tsv), radii)
            for column in columns:
                if not cells[column] <= row[column]:  # NaN (nothing yet) compares False
                    for name in (column, *interval_columns(column)):
                        row[name] = cells[name]
        rows.append(row)
    return pd.DataFrame(rows)


SPREAD_STATS = ("mean", "sd", "min", "max")


def seed_spread_table(runs: Sequence, dataset: str, radii: Sequence[float],
                      labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Mean and spread over the seeds of each recipe: one row per (recipe, sigma), plus a
    ``best`` row per recipe for the best-over-sigma envelope of each seed.

    Runs sharing ``Run.recipe`` are replicates (a method per seed). For each radius column
    ``r=<radius>`` and ``ACR`` the CSV has ``<column> mean|sd|min|max`` over the finished
    replicates (sd with ddof 1, 0 for one seed); ``seeds`` counts them. ``labels`` names each
    recipe (default: its id), ``recipe`` is the id.
    """
    selected = [run for run in _dataset_runs(runs, dataset) if run.recipe]
    columns = _value_columns(radii)
    rows = []
    for recipe in dict.fromkeys(run.recipe for run in selected):
        of_recipe = [run for run in selected if run.recipe == recipe]
        sigmas = sorted({run.sigma for run in of_recipe})
        curves: dict[str, list[dict]] = {}  # sigma (or "best") -> one curve per seed
        for method in dict.fromkeys(run.method for run in of_recipe):
            done = [run for run in of_recipe if run.method == method and run.done]
            per_sigma = {run.sigma: _accuracy_cells(load(run.tsv), radii) for run in done}
            for sigma, cells in per_sigma.items():
                curves.setdefault(f"{sigma:g}", []).append(cells)
            if len(per_sigma) == len(sigmas):  # the envelope needs every sigma of the seed
                curves.setdefault("best", []).append(
                    {c: max(cells[c] for cells in per_sigma.values()) for c in columns})
        for key in [f"{s:g}" for s in sigmas] + ["best"]:
            row: dict = {"method": (labels or {}).get(recipe, recipe), "recipe": recipe,
                         "sigma": key, "seeds": len(curves.get(key, []))}
            for column in columns:
                values = pd.Series([c[column] for c in curves.get(key, [])], dtype=float)
                sd = values.std(ddof=1) if len(values) > 1 else 0.0 if len(values) else math.nan
                stats = (values.mean(), sd, values.min(), values.max())
                row.update({f"{column} {name}": value
                            for name, value in zip(SPREAD_STATS, stats, strict=True)})
            rows.append(row)
    return pd.DataFrame(rows)


def seed_spread_display(table: pd.DataFrame) -> pd.DataFrame:
    """The seed table as Markdown/LaTeX show it: ``mean (min–max)`` per cell."""
    shown = table[["method", "sigma", "seeds"]].copy()  # the recipe id is for programs
    values = [c[: -len(" mean")] for c in table.columns if c.endswith(" mean")]
    for column in values:
        decimals = _decimals(column)
        shown[column] = [
            NOT_RUN if pd.isna(row[f"{column} mean"]) else
            f"{row[f'{column} mean']:.{decimals}f} ({row[f'{column} min']:.{decimals}f}–"
            f"{row[f'{column} max']:.{decimals}f})"
            for _, row in table.iterrows()]
    return shown


def read_reference(reference_csv: str | os.PathLike = REFERENCE_RESULTS) -> pd.DataFrame:
    """reference_results.csv with ``sigma`` as text ("best" or a number) and float radii."""
    reference = pd.read_csv(reference_csv, dtype={"sigma": str})
    missing = [c for c in ("dataset", "method", "sigma", "radius", "certified_accuracy_pct")
               if c not in reference.columns]
    if missing:
        raise ValueError(f"{reference_csv}: missing columns {missing}")
    reference["radius"] = reference["radius"].astype(float)
    return reference


def published_accuracy(reference: pd.DataFrame, method: str | None, dataset: str,
                       sigma: str | float = "best") -> pd.Series | None:
    """The published certified accuracy (%) of ``method`` on ``dataset`` at ``sigma`` ("best"
    or a noise level), indexed by radius (from ``read_reference``); None when the reference
    has no such numbers (or ``method`` is None: a run with no published counterpart)."""
    if method is None:
        return None
    rows = reference[(reference["method"] == method) & (reference["dataset"] == dataset)
                     & reference["sigma"].map(lambda s: _same_sigma(s, sigma))]
    if rows.empty:
        return None
    return pd.Series(rows["certified_accuracy_pct"].to_numpy(dtype=float),
                     index=pd.Index(rows["radius"].to_numpy(dtype=float), name="radius"),
                     name=method).sort_index()


COMPARISON_COLUMNS = ["dataset", "method", "radius", "paper %", "this run %", "run"]


def paper_comparison_table(runs: Sequence, dataset: str | Sequence[str] | None = None,
                           reference_csv: str | os.PathLike = REFERENCE_RESULTS,
                           sigma: str | float = "best", *, radii: Sequence[float] | None = None,
                           reference_dataset: str | None = None) -> pd.DataFrame:
    """Published vs reproduced certified accuracy (%), one row per (dataset, method, radius).

    For each dataset of the reference (``dataset``: one name, several, or None for every
    dataset in the CSV, in file order) and each published method of its table, at the
    published radii: "paper %" is the published number and "this run %" the accuracy of the
    run(s) whose ``paper`` is that method on that dataset, or "not run" when no run maps to it
    or its TSV does not exist yet; "run" names the run (its display label).

    ``sigma="best"`` compares the paper's best-over-sigma tables with this project's envelope
    over sigmas; a number compares a per-sigma table (Cohen et al.'s) with the runs at that
    sigma only.

    Runs without a published counterpart (no ``paper``, a name the reference lacks, or another
    dataset) follow, with "—" as "paper %", at ``radii`` (default: the published radii of their
    dataset), so the table always shows what the runs produced. A run compares with the
    reference rows of ``reference_dataset`` when given, else of its own dataset.
    """
    all_runs = as_runs(runs)
    reference = read_reference(reference_csv)
    reference = reference[reference["sigma"].map(lambda s: _same_sigma(s, sigma))]
    if dataset is None:
        datasets = list(dict.fromkeys(reference["dataset"]))
        if not datasets:
            raise ValueError(f"reference_results has no numbers for sigma={sigma}")
    else:
        datasets = [dataset] if isinstance(dataset, str) else list(dataset)
    for name in datasets:
        if not (reference["dataset"] == name).any():
            raise ValueError(f"reference_results has no {name!r} numbers for sigma={sigma}")

    def compared_on(run: Run) -> str:
        return reference_dataset or run.dataset

    def at_sigma(method_runs: list[Run]) -> list[Run]:
        return [r for r in method_runs if sigma == "best" or _same_sigma(r.sigma, sigma)]

    def accuracy(method_runs: list[Run], at: Sequence[float]) -> pd.Series | None:
        curves = accuracy_by_sigma(at_sigma(method_runs), at)
        return None if curves.empty else best_over_sigma(curves)

    groups = {m: [r for r in all_runs if r.method == m] for m in _methods(all_runs)}
    matched: set[str] = set()
    rows = []
    for name in datasets:
        published_rows = reference[reference["dataset"] == name]
        for paper_method in dict.fromkeys(published_rows["method"]):
            of_method = published_rows[published_rows["method"] == paper_method]
            published = dict(zip(of_method["radius"], of_method["certified_accuracy_pct"],
                                 strict=True))
            at = sorted(published)
            ids = [m for m, rs in groups.items()
                   if rs[0].paper == paper_method and compared_on(rs[0]) == name]
            matched.update(ids)
            for method_id in ids or [None]:
                ours = None if method_id is None else accuracy(groups[method_id], at)
                label = NOT_REPORTED if method_id is None else groups[method_id][0].display
                rows += [{"dataset": name, "method": paper_method, "radius": r,
                          "paper %": f"{published[r]:.1f}",
                          "this run %": NOT_RUN if ours is None else f"{100 * ours[r]:.1f}",
                          "run": label} for r in at]
    for method_id, method_runs in groups.items():
        first = method_runs[0]
        if method_id in matched or (dataset is not None and compared_on(first) not in datasets):
            continue
        if radii is not None:
            at = sorted(float(r) for r in radii)
        else:
            own = reference[reference["dataset"] == compared_on(first)]
            if own.empty:
                raise ValueError(f"give radii: reference_results has no {compared_on(first)!r} "
                                 f"radii for run {first.display!r}")
            at = sorted(own["radius"].unique())
        ours = accuracy(method_runs, at)
        rows += [{"dataset": first.dataset, "method": first.display, "radius": r,
                  "paper %": NOT_REPORTED,
                  "this run %": NOT_RUN if ours is None else f"{100 * ours[r]:.1f}",
                  "run": first.display} for r in at]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def base_columns(split: str = "test") -> list[str]:
    """Columns of the base-classifier table; ``split`` is the split that was certified."""
    smoothed = f"smoothed {split} acc %"
    return ["method", "sigma", "epoch", "val acc %", "val smoothed acc %", "images",
            smoothed, *interval_columns(smoothed), "ACR", *interval_columns("ACR")]


def base_classifier_table(runs: Sequence, split: str = "test") -> pd.DataFrame:
    """One row per run's base classifier: the fine-tuned checkpoint and its certification.

    ``epoch``, ``val acc %`` (clean) and ``val smoothed acc %`` come from the checkpoint's JSON
    metadata (``Run.checkpoint``: its ``epoch`` and ``metrics.val_acc`` /
    ``metrics.val_smoothed_acc``); ``images``, ``smoothed <split> acc %`` (the certified
    accuracy at radius 0 on the certified ``split``, abstentions counting as wrong) and
    ``ACR`` from the certification TSV. Missing files leave missing values ("not run"); a
    checkpoint without a metric shows "—".
    """
    selected = as_runs(runs)
    methods = _methods(selected)
    columns = base_columns(split)
    smoothed = f"smoothed {split} acc %"
    rows = []
    for run in sorted(selected, key=lambda r: (methods.index(r.method), r.sigma)):
        row: dict = {"method": run.display, "sigma": run.sigma, "epoch": pd.NA,
                     "val acc %": math.nan, "val smoothed acc %": math.nan}
        meta = _checkpoint_meta(run)
        if meta is not None:
            row["epoch"] = meta.get("epoch", pd.NA)
            metrics = meta.get("metrics") or {}
            for column, key in (("val acc %", "val_acc"), ("val smoothed acc %",
                                                           "val_smoothed_acc")):
                value = metrics.get(key)
                row[column] = NOT_REPORTED if value is None else 100 * float(value)
        if run.done:
            df = load(run.tsv)
            row["images"] = len(df)
            cells = _accuracy_cells(df, [0.0])
            _with_interval(row, smoothed, cells["r=0"], (cells["r=0 lo"], cells["r=0 hi"]))
            for name in ("ACR", *interval_columns("ACR")):
                row[name] = cells[name]
        else:
            row.update({"images": pd.NA, **_missing_cells([smoothed, "ACR"])})
        rows.append(row)
    table = pd.DataFrame(rows, columns=columns)
    for column in ("epoch", "images"):
        table[column] = table[column].astype("Int64")
    return table


def _checkpoint_meta(run: Run) -> dict | None:
    if run.checkpoint is None or not run.checkpoint.is_file():
        return None
    meta = read_json(run.checkpoint)
    if not isinstance(meta, dict):
        raise ValueError(f"{run.checkpoint}: expected a JSON object of checkpoint metadata")
    return meta


def _same_sigma(a, b) -> bool:
    if str(a) == "best" or str(b) == "best":
        return str(a) == str(b)
    return math.isclose(float(a), float(b))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


TEXT_COLUMNS = ("dataset", "method", "sigmas", "run", "certification")  # left-aligned


def default_bold_columns(table: pd.DataFrame) -> list[str]:
    """Accuracy (``r=<radius>``, ``... acc %``) and ACR columns: where the best is marked."""
    return [c for c in _shown_columns(table)
            if c.startswith("r=") or c == "ACR" or c.endswith("acc %")]


def _decimals(column: str) -> int | None:
    if column.startswith("r=") or column.endswith("%"):
        return 1
    return 3 if column == "ACR" else None


def _format_cell(column: str, value, interval: tuple | None = None) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NOT_RUN
    if isinstance(value, str):
        return value
    decimals = _decimals(column)
    if decimals is not None:
        text = f"{value:.{decimals}f}"
        if interval is not None and not any(pd.isna(v) for v in interval):
            # the larger side of the (possibly asymmetric) interval: never understated
            text += f" ±{max(value - interval[0], interval[1] - value):.{decimals}f}"
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
