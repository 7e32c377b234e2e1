"""The report's tables as DataFrames, from the runs' certification TSVs and checkpoints.

Certified accuracies are in percent with their 95% intervals over the certified images
(Clopper-Pearson; a t-interval for the ACR) in the interval columns of ``columns``; runs whose
TSV does not exist yet keep their rows with missing values. ``render`` writes the tables.

``per_sigma_table`` (one row per method and sigma), ``best_sigma_table`` (best over sigma per
method), ``seed_spread_table`` (mean and spread over the seeds of each recipe),
``paper_comparison_table`` (the published numbers of every dataset in reference_results.csv
next to this project's) and ``base_classifier_table`` (the fine-tuned checkpoints' validation
metrics and their certification at radius 0).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import pandas as pd

from dmae.io import read_json
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
from dmae.report.columns import (
    NOT_REPORTED,
    NOT_RUN,
    interval_columns,
    radius_column,
    value_columns,
)
from dmae.report.reference import REFERENCE_RESULTS, read_reference, same_sigma
from dmae.report.render import decimals


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
            row.update(_missing_cells(value_columns(radii)))
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
        columns = value_columns(radii)
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
    columns = value_columns(radii)
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
        places = decimals(column)
        shown[column] = [
            NOT_RUN if pd.isna(row[f"{column} mean"]) else
            f"{row[f'{column} mean']:.{places}f} ({row[f'{column} min']:.{places}f}–"
            f"{row[f'{column} max']:.{places}f})"
            for _, row in table.iterrows()]
    return shown


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
    reference = reference[reference["sigma"].map(lambda s: same_sigma(s, sigma))]
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
        return [r for r in method_runs if sigma == "best" or same_sigma(r.sigma, sigma)]

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
