"""The figures' certified-accuracy curves in long format, for DVC plots and other tools.

``tables/certified_accuracy_curves.csv``: one row per finished run and radius, with the
Clopper-Pearson interval of each point (columns ``CURVE_COLUMNS``). ``curve`` names the line
("<method>, σ=<sigma>"), so a plot draws one line per method and sigma.

``tables/best_over_sigma_curves.csv``: one row per method and radius, the best certified
accuracy over the method's finished sigmas (with the interval of the sigma it comes from),
``source`` "this run"; and, for a method that reproduces a published one (``Run.paper``), the
paper's points at the radii it reports, ``source`` "paper" (``lo``/``hi`` empty), so that a
run and the paper are compared on one plot.

Both are evaluated at ``CURVE_POINTS`` radii from 0 to 1.05 times the largest certified
radius: the same function as the figures, on a coarser grid (the files live in git).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dmae.layout import CURVE_X, CURVE_Y
from dmae.report.analysis import (
    Run,
    as_runs,
    certified_accuracy,
    certified_accuracy_intervals,
    load,
    radius_grid,
)
from dmae.report.reference import published_accuracy

CURVE_POINTS = 101
VALUE = CURVE_Y
THIS_RUN, PAPER = "this run", "paper"  # the `source` values (the DVC template filters on them)
CURVE_COLUMNS = ["curve", "method", "sigma", CURVE_X, VALUE, "lo", "hi"]
BEST_COLUMNS = ["curve", "method", "source", CURVE_X, VALUE, "lo", "hi"]


def _finished(runs: Sequence, dataset: str) -> dict[Run, pd.DataFrame]:
    return {run: load(run.tsv) for run in as_runs(runs) if run.dataset == dataset and run.done}


def _points(df: pd.DataFrame, grid: np.ndarray) -> pd.DataFrame:
    """Certified accuracy (%) and its interval at each radius of ``grid``."""
    bounds = certified_accuracy_intervals(df, grid)
    return pd.DataFrame({CURVE_X: grid, VALUE: 100 * certified_accuracy(df, grid).to_numpy(),
                         "lo": 100 * bounds["lo"].to_numpy(), "hi": 100 * bounds["hi"].to_numpy()})


def certified_accuracy_curves(runs: Sequence, dataset: str,
                              points: int = CURVE_POINTS) -> pd.DataFrame:
    """One row per (finished run of ``dataset``, radius); no rows before any run finished."""
    tables = _finished(runs, dataset)
    if not tables:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    grid = radius_grid(list(tables.values()), points)
    frames = [_points(df, grid).assign(curve=f"{run.display}, σ={run.sigma:g}",
                                       method=run.display, sigma=run.sigma)
              for run, df in tables.items()]
    return pd.concat(frames, ignore_index=True)[CURVE_COLUMNS]


def best_over_sigma_curves(runs: Sequence, dataset: str, reference: pd.DataFrame | None = None,
                           reference_dataset: str | None = None,
                           points: int = CURVE_POINTS) -> pd.DataFrame:
    """One row per (method, radius), the best over its finished sigmas; then the published
    points of each method that has some in ``reference`` (``tables.read_reference``) on
    ``reference_dataset`` (default: ``dataset``)."""
    tables = _finished(runs, dataset)
    if not tables:
        return pd.DataFrame(columns=BEST_COLUMNS)
    grid = radius_grid(list(tables.values()), points)
    frames = []
    for method in dict.fromkeys(run.method for run in tables):
        of_method = [run for run in tables if run.method == method]
        curves = [_points(tables[run], grid) for run in of_method]
        best = np.argmax(np.stack([c[VALUE].to_numpy() for c in curves]), axis=0)  # first max
        envelope = curves[0].copy()
        for column in (VALUE, "lo", "hi"):
            envelope[column] = [curves[k][column].iloc[i] for i, k in enumerate(best)]
        display, paper = of_method[0].display, of_method[0].paper
        frames.append(envelope.assign(curve=display, method=display, source=THIS_RUN))
        published = (None if reference is None else
                     published_accuracy(reference, paper, reference_dataset or dataset))
        if published is not None:
            frames.append(pd.DataFrame({
                "curve": f"{paper} (paper)", "method": display, "source": PAPER,
                CURVE_X: published.index.to_numpy(), VALUE: published.to_numpy(),
                "lo": np.nan, "hi": np.nan}))
    return pd.concat(frames, ignore_index=True)[BEST_COLUMNS]
