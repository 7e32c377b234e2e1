"""The statistics of CERTIFY and PREDICT (Cohen, Rosenfeld & Kolter, 2019): Clopper-Pearson
bounds on a class's probability, the certified radius, and PREDICT's binomial test.

Pure functions, vectorized over numpy arrays so that they can be tested in bulk.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta, binomtest, norm


def lower_confidence_bound(n_a, n, alpha):
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    Equals ``beta.ppf(alpha, nA, n - nA + 1)`` and 0 when nA = 0. Works elementwise on arrays;
    returns a Python float for scalar input.
    """
    n_a = np.asarray(n_a, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(alpha, np.maximum(n_a, 1), n - n_a + 1)
    bound = np.where(n_a > 0, bound, 0.0)
    return float(bound) if bound.ndim == 0 else bound


def upper_confidence_bound(n_a, n, alpha):
    """One-sided (1 - alpha) Clopper-Pearson upper bound on a binomial proportion.

    Equals ``beta.ppf(1 - alpha, nA + 1, n - nA)`` and 1 when nA = n. Elementwise on arrays.
    """
    n_a = np.asarray(n_a, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(1 - alpha, n_a + 1, np.maximum(n - n_a, 1))
    bound = np.where(n_a < n, bound, 1.0)
    return float(bound) if bound.ndim == 0 else bound


def radius_from_bound(p_a_lower, sigma: float):
    """Certified L2 radius sigma * Phi^-1(pA_lower); 0.0 where the certificate abstains (< 0.5)."""
    p = np.asarray(p_a_lower, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        radius = np.where(p >= 0.5, sigma * norm.ppf(p), 0.0)
    return float(radius) if radius.ndim == 0 else radius


def certify_from_counts(n_a, n, alpha: float, sigma: float):
    """Return ``(certified, pA_lower, radius)`` for selection-phase winners counted nA of n times.

    ``certified`` is False (ABSTAIN, radius 0.0) exactly when pA_lower < 0.5, as in CERTIFY.
    Elementwise on arrays.
    """
    p_a_lower = lower_confidence_bound(n_a, n, alpha)
    certified = np.asarray(p_a_lower) >= 0.5
    radius = radius_from_bound(p_a_lower, sigma)
    if np.ndim(certified) == 0:
        return bool(certified), p_a_lower, radius
    return certified, p_a_lower, radius


def predict_pvalue(n_a: int, n_b: int) -> float:
    """Two-sided binomial test p-value that the top two classes are equally likely (PREDICT)."""
    return float(binomtest(int(n_a), int(n_a) + int(n_b), 0.5).pvalue)
