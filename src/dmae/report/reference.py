"""The papers' published certified accuracies, from the packaged reference_results.csv.

One row per (dataset, method, sigma, radius): DMAE Tables 1 and 3 (``sigma`` "best": best over
sigma) and Cohen et al.'s per-sigma tables (``sigma`` a noise level), in percent.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

REFERENCE_RESULTS = Path(__file__).resolve().parents[1] / "reference_results.csv"


def read_reference(reference_csv: str | os.PathLike = REFERENCE_RESULTS) -> pd.DataFrame:
    """reference_results.csv with ``sigma`` as text ("best" or a number) and float radii."""
    reference = pd.read_csv(reference_csv, dtype={"sigma": str})
    missing = [c for c in ("dataset", "method", "sigma", "radius", "certified_accuracy_pct")
               if c not in reference.columns]
    if missing:
        raise ValueError(f"{reference_csv}: missing columns {missing}")
    reference["radius"] = reference["radius"].astype(float)
    return reference


def same_sigma(a, b) -> bool:
    """Whether two sigmas are the same: both "best", or equal noise levels."""
    if str(a) == "best" or str(b) == "best":
        return str(a) == str(b)
    return math.isclose(float(a), float(b))


def published_accuracy(reference: pd.DataFrame, method: str | None, dataset: str,
                       sigma: str | float = "best") -> pd.Series | None:
    """The published certified accuracy (%) of ``method`` on ``dataset`` at ``sigma`` ("best"
    or a noise level), indexed by radius (from ``read_reference``); None when the reference
    has no such numbers (or ``method`` is None: a run with no published counterpart)."""
    if method is None:
        return None
    rows = reference[(reference["method"] == method) & (reference["dataset"] == dataset)
                     & reference["sigma"].map(lambda s: same_sigma(s, sigma))]
    if rows.empty:
        return None
    return pd.Series(rows["certified_accuracy_pct"].to_numpy(dtype=float),
                     index=pd.Index(rows["radius"].to_numpy(dtype=float), name="radius"),
                     name=method).sort_index()
