"""Checks of certification settings, run once when a method or a certifier is built.

Each raises ValueError naming the setting, the value and what was expected. They load
nothing beyond the standard library: a method checks a config's settings with them while
the config is validated, in every job (``numbers`` knows numpy's scalar types too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_positive_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_above(name: str, value, bound: float) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value <= bound:
        raise ValueError(f"{name} must be a number > {bound:g}, got {value!r}")


def check_probability(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")


def check_sampling(*, n0: int, n: int, alpha: float) -> None:
    """Raise ValueError for n0 < 1, n < n0 or alpha outside (0, 1)."""
    check_positive_int("n0", n0)
    check_positive_int("n", n)
    if n < n0:
        raise ValueError(f"n must be >= n0, got n={n}, n0={n0}")
    check_probability("alpha", alpha)


def check_radii(radii: Sequence[float]) -> list[float]:
    """The radius grid as floats; ValueError naming ``certify.radii`` unless it is a
    non-empty, strictly increasing list of finite radii >= 0."""
    if hasattr(radii, "tolist"):  # a numpy array
        radii = radii.tolist()
    grid = list(radii) if isinstance(radii, list | tuple) else None
    if not grid:
        raise ValueError(f"certify.radii must be a non-empty list of radii, got {radii!r}")
    if any(isinstance(r, bool) or not isinstance(r, Real) or not math.isfinite(r) or r < 0
           for r in grid):
        raise ValueError(f"certify.radii must hold finite numbers >= 0, got {radii!r}")
    if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise ValueError(f"certify.radii must be sorted in increasing order without repeats, "
                         f"got {radii!r}")
    return [float(r) for r in grid]
