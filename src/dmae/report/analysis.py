"""Certified accuracy, average certified radius, their confidence intervals over the finite set
of certified images, the best-over-sigma envelope and the radius ceiling of a certification
budget.

A certification table has one row per test image with at least ``correct`` (1 when the smoothed
prediction is the label, hence never for ABSTAIN or MISMATCH) and ``radius`` (0.0 for ABSTAIN
and MISMATCH). An image stopped on a mismatch (``predict`` -2: its selected class is not its
label) is misclassified, not abstained.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta, norm, t

from dmae.certify.base import ABSTAIN, MISMATCH
from dmae.certify.records import read_certification
from dmae.io import read_json
from dmae.layout import meta_path


@dataclass(frozen=True)
class Run:
    """One certification run: a (dataset, method, sigma) and the TSV it writes.

    ``method`` is the id runs are grouped by; ``label`` is its display name (default: the
    id) and ``paper`` its method name in reference_results.csv (None: the paper has none).
    ``checkpoint`` is the JSON metadata of the fine-tuned base classifier it certifies (None:
    unknown). ``recipe`` names the recipe the run replicates with another seed (None: not a
    replicate). A run is ``done`` once its TSV exists; until then every table says "not run".
    """

    dataset: str
    method: str
    sigma: float
    tsv: Path
    label: str | None = None
    paper: str | None = None
    checkpoint: Path | None = None
    recipe: str | None = None

    def __post_init__(self) -> None:
        # Accept str paths and numeric-looking sigmas; empty labels/papers mean "none".
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "tsv", Path(self.tsv))
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        for name in ("label", "paper"):
            value = getattr(self, name)
            object.__setattr__(self, name, (str(value).strip() or None) if value is not None
                               else None)

    @property
    def done(self) -> bool:
        return self.tsv.is_file()

    @property
    def display(self) -> str:
        return self.label or self.method


def as_runs(records: Sequence) -> list[Run]:
    """Runs from ``Run`` objects, ``(dataset, method, sigma, tsv_path)`` tuples or dicts."""
    runs = []
    for record in records:
        if isinstance(record, Run):
            runs.append(record)
        elif isinstance(record, Mapping):
            runs.append(Run(str(record["dataset"]), str(record["method"]),
                            float(record["sigma"]), Path(record["tsv_path"]),
                            record.get("label"), record.get("paper"),
                            record.get("checkpoint")))
        else:
            dataset, method, sigma, tsv = record
            runs.append(Run(str(dataset), str(method), float(sigma), Path(tsv)))
    return runs


def load(path: str | os.PathLike) -> pd.DataFrame:
    """A finished certification TSV (see ``dmae.certify.records``)."""
    return read_certification(path)


def _check(df: pd.DataFrame) -> None:
    missing = [c for c in ("correct", "radius") if c not in df.columns]
    if missing:
        raise ValueError(f"certification table lacks columns {missing}")
    if len(df) == 0:
        raise ValueError("certification table has no rows")


def certified_accuracy(df: pd.DataFrame, radii: Sequence[float]) -> pd.Series:
    """Fraction of images with ``correct == 1`` and ``radius >= r``, for each r in ``radii``.

    At r = 0 this is the smoothed classifier's clean accuracy (abstentions count as wrong).
    """
    _check(df)
    correct = df["correct"].to_numpy() == 1
    radius = df["radius"].to_numpy(dtype=np.float64)
    values = [float(np.mean(correct & (radius >= r))) for r in radii]
    return pd.Series(values, index=pd.Index([float(r) for r in radii], name="radius"),
                     name="certified_accuracy")


def average_certified_radius(df: pd.DataFrame) -> float:
    """ACR: mean over images of radius * correct (0 for wrong or abstained images)."""
    _check(df)
    return float(np.mean(df["radius"].to_numpy(dtype=np.float64) * (df["correct"] == 1)))


# Level of the interval stated beside every certified accuracy and ACR in the tables.
CONFIDENCE = 0.95


def proportion_interval(k: int, n: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for a proportion observed as ``k`` of ``n``.

    Exact (beta quantiles, not a normal approximation), so it covers the true proportion with
    probability at least ``level`` for every proportion and n, including accuracies near 0 or
    1, where a Wald interval undercovers. Here the proportion is an accuracy over the images
    certified: the test images are a sample, and this is how far another sample of the same
    size could land.
    """
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"expected 0 <= k <= n and n >= 1, got k={k}, n={n}")
    tail = (1.0 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return lo, hi


def mean_interval(values: np.ndarray, level: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval for the mean of ``values`` (the ACR over images: a mean of radii)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean
    half = float(t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1)
                 / math.sqrt(len(values)))
    return mean - half, mean + half


def certified_accuracy_intervals(df: pd.DataFrame, radii: Sequence[float],
                                 level: float = CONFIDENCE) -> pd.DataFrame:
    """Clopper-Pearson interval of the certified accuracy at each radius: columns lo, hi."""
    _check(df)
    correct = df["correct"].to_numpy() == 1
    radius = df["radius"].to_numpy(dtype=np.float64)
    rows = [proportion_interval(int(np.sum(correct & (radius >= r))), len(df), level)
            for r in radii]
    return pd.DataFrame(rows, columns=["lo", "hi"],
                        index=pd.Index([float(r) for r in radii], name="radius"))


def acr_interval(df: pd.DataFrame, level: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of the average certified radius over the certified images."""
    _check(df)
    return mean_interval(df["radius"].to_numpy(dtype=np.float64) * (df["correct"] == 1), level)


def counts(df: pd.DataFrame) -> dict[str, int]:
    """Number of images, correct (= certified at radius 0) and abstained predictions (ABSTAIN
    only: the rest, images stopped on a mismatch included, are misclassified)."""
    _check(df)
    abstained = int((df["predict"] == ABSTAIN).sum()) if "predict" in df.columns else 0
    return {"images": len(df), "correct": int((df["correct"] == 1).sum()),
            "abstained": abstained}


def mismatches(df: pd.DataFrame) -> int:
    """Images stopped after selection because the selected class is not the label."""
    return int((df["predict"] == MISMATCH).sum()) if "predict" in df.columns else 0


def forward_passes(df: pd.DataFrame) -> float | None:
    """Mean forward passes per image: n0 selection plus the n_used estimation samples (n in
    TSVs written before n_used was recorded); None for a table without sample counts."""
    _check(df)
    used = next((df[c] for c in ("n_used", "n") if c in df.columns), None)
    return None if used is None or "n0" not in df.columns else float((df["n0"] + used).mean())


def certification_method(tsv: str | os.PathLike) -> dict:
    """The method (``name``) and parameters a certification TSV was made with, from its
    settings sidecar; cohen for files made before the method was recorded."""
    sidecar = meta_path(tsv)
    method = read_json(sidecar).get("settings", {}).get("method") if sidecar.is_file() else None
    return method if isinstance(method, dict) else {"name": method or "cohen"}


def radius_grid(tables: Sequence[pd.DataFrame], points: int,
                max_radius: float | None = None) -> np.ndarray:
    """``points`` radii from 0 to ``max_radius`` (default: 1.05 x the largest certified radius
    of ``tables``, or 1 when none is positive): where curves are drawn."""
    if max_radius is None:
        largest = max(float(df["radius"].max()) for df in tables)
        max_radius = 1.05 * largest if largest > 0 else 1.0
    return np.linspace(0.0, max_radius, points)


def best_over_sigma(curves: pd.DataFrame) -> pd.Series:
    """Envelope of certified-accuracy curves: rows are sigmas, columns radii; max per radius."""
    if curves.empty:
        raise ValueError("no curves to take the best over")
    return curves.max(axis=0)


def accuracy_by_sigma(runs: Sequence[Run], radii: Sequence[float]) -> pd.DataFrame:
    """Certified accuracy curves of finished runs: one row per sigma, one column per radius."""
    sigmas = [run.sigma for run in runs]
    if len(set(sigmas)) != len(sigmas):
        raise ValueError(f"several runs share a sigma: {sorted(sigmas)}")
    rows = {run.sigma: certified_accuracy(load(run.tsv), radii) for run in runs if run.done}
    if not rows:
        return pd.DataFrame(columns=[float(r) for r in radii], dtype=float)
    return pd.DataFrame(rows).T.sort_index()


def radius_ceiling(n: int, alpha: float, sigma: float = 1.0) -> float:
    """The largest L2 radius CERTIFY can return with ``n`` samples at level ``alpha``.

    When all n samples vote for the top class the one-sided Clopper-Pearson bound is
    pA_lower = alpha^(1/n), so the radius is at most sigma * Phi^-1(alpha^(1/n)); e.g. 3.1986
    sigma for n = 10,000 and 3.8115 sigma for n = 100,000 at alpha = 0.001.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    # Phi^-1(alpha^(1/n)) = isf(1 - alpha^(1/n)), with 1 - alpha^(1/n) = -expm1(log(alpha)/n)
    # computed without cancellation for large n.
    tail = -math.expm1(math.log(alpha) / int(n))
    if tail >= 0.5:  # pA_lower <= 0.5: CERTIFY abstains on every image
        return 0.0
    return float(sigma) * float(norm.isf(tail))
