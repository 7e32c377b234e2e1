"""The sequential test of the adaptive certification method (``dmae.certify.methods.adaptive``):
estimation samples drawn in rounds, each image stopped as soon as its answer on a radius grid
is settled.

Why the certificate keeps its level alpha: the plan fixes, before any sample is drawn, K look
sizes m_1 < ... < m_K = n_max and levels alpha_1 .. alpha_K summing to alpha, and gives each
look the one-sided Clopper-Pearson bound (Clopper & Pearson, 1934) at its level. By the union
bound all K bounds hold at once with probability at least 1 - alpha, so the bound reported at
whichever look the data made the plan stop at holds too, whatever the stopping rule looked
at; CERTIFY's argument (Cohen et al., 2019) turns it into the radius, exactly as for a fixed n.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from dmae.certify.checks import (
    check_above,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_radii,
)
from dmae.certify.stats import lower_confidence_bound, upper_confidence_bound


class SequentialPlan:
    """When to stop drawing estimation samples, and the bound on pA reported then.

    The looks are ``first_look * growth**k`` (rounded up) below ``n_max``, then ``n_max``, plus
    for every grid radius the least sample size at which unanimous votes prove it: a confident
    image stops at the first look that can certify the largest radius it could reach. Half of
    alpha goes to the last look (n_max), where an image whose pA sits at a threshold ends up,
    so that it loses least against CERTIFY's bound at alpha; the other half is split evenly
    over the earlier looks (a confident image pays for it with ~ln 2 / ln(K / alpha) more
    samples).

    After each look, with nA votes out of m samples, the bounds L <= pA <= U at the look's
    level place pA on the grid of thresholds Phi(r / sigma) (0.5 for "certified at all"). The
    plan stops when the grid answer is settled: every threshold that is still within reach is
    proven (L reaches it), where a threshold is within reach if n_max samples voting in
    proportion U would prove it. So it stops on certification (the largest reachable radius
    is proven), on futility (U shows the next radius is out of reach, or pA < 1/2), or at
    n_max. Thresholds that even n_max unanimous votes cannot prove are left out.
    """

    def __init__(self, *, sigma: float, alpha: float, n_max: int, radii: Sequence[float],
                 first_look: int, growth: float):
        check_positive_float("sigma", sigma)
        check_probability("certify.alpha", alpha)
        check_positive_int("certify.n_max", n_max)
        check_positive_int("certify.first_look", first_look)
        check_above("certify.growth", growth, 1)
        self.sigma, self.alpha, self.n_max = float(sigma), float(alpha), int(n_max)
        self.radii = check_radii(radii)
        self.first_look, self.growth = int(first_look), float(growth)
        from scipy.stats import norm  # here: slow to import, and only this plan needs it

        grid = sorted({0.5, *(float(norm.cdf(r / self.sigma)) for r in self.radii)})

        geometric, m = [], self.first_look
        while m < self.n_max:
            geometric.append(m)
            m = max(m + 1, math.ceil(m * self.growth))
        geometric.append(self.n_max)
        # Each aligned size is computed at a level no larger than the plan's earlier looks', so
        # that unanimous votes there prove its radius: first at the level of one look per
        # size, then once more at the level of the looks that gives, if that adds no look.
        self.looks = self._with_aligned(geometric, grid, len(geometric) + len(grid))
        refined = self._with_aligned(geometric, grid, len(self.looks))
        if len(refined) <= len(self.looks):
            self.looks = refined
        self.levels = self.split_alpha(len(self.looks))
        self._level = dict(zip(self.looks, self.levels, strict=True))
        # the bound of n_max unanimous votes: no larger radius can be proven
        ceiling = self.levels[-1] ** (1.0 / self.n_max)
        self.thresholds = np.array([t for t in grid if t <= ceiling])
        self._stop = [self._settled(m) for m in self.looks]

    def split_alpha(self, looks: int) -> tuple[float, ...]:
        """Each look's level, summing to alpha (the union bound): half at the last look, the
        other half evenly over the earlier ones."""
        if looks == 1:
            return (self.alpha,)
        return (self.alpha / (2 * (looks - 1)),) * (looks - 1) + (self.alpha / 2,)

    def _with_aligned(self, geometric: list[int], grid: list[float], looks: int
                      ) -> tuple[int, ...]:
        """The geometric looks plus, for each threshold t, the least m with
        level ** (1 / m) >= t at the earlier looks' level for this many looks, between the
        first look and n_max."""
        level = self.split_alpha(looks)[0]
        aligned = {math.ceil(math.log(level) / math.log(t)) for t in grid if t < 1.0}
        return tuple(sorted({*geometric,
                             *(m for m in aligned if self.first_look <= m < self.n_max)}))

    def _settled(self, m: int) -> np.ndarray:
        """For every count 0..m at a look of m samples: whether the grid answer is settled."""
        if m == self.n_max:
            return np.ones(m + 1, dtype=bool)
        votes = np.arange(m + 1)
        lower = lower_confidence_bound(votes, m, self._level[m])
        upper = upper_confidence_bound(votes, m, self._level[m])
        best_case = lower_confidence_bound(np.floor(upper * self.n_max + 1e-9).astype(np.int64),
                                           self.n_max, self.levels[-1])
        proven = np.searchsorted(self.thresholds, lower, side="right")
        reachable = np.searchsorted(self.thresholds, best_case, side="right")
        return proven >= reachable

    def run(self, draw: Callable[[int], int]) -> tuple[int, int]:
        """Draw ``draw(k)`` (votes for the selected class among k new samples) look by look
        until the answer is settled; return (votes, samples drawn)."""
        votes = drawn = 0
        for m, settled in zip(self.looks, self._stop, strict=True):
            votes += int(draw(m - drawn))
            drawn = m
            if settled[votes]:
                break
        return votes, drawn

    def bound(self, votes: int, drawn: int) -> float:
        """The lower confidence bound on pA that the plan proves after stopping at the look of
        ``drawn`` samples."""
        return lower_confidence_bound(votes, drawn, self._level[drawn])

    def parameters(self) -> dict:
        return {"n_max": self.n_max, "radii": self.radii, "first_look": self.first_look,
                "growth": self.growth, "looks": list(self.looks), "levels": list(self.levels)}
