"""The sequential test of the adaptive certification method (``dmae.certify.methods.adaptive``):
estimation samples drawn in looks, each image stopped as soon as its answer on a radius grid
is settled.

Why a certificate keeps CERTIFY's level alpha. A certificate of grid radius r_j claims
pA >= t_j = Phi(r_j / sigma) (t = 1/2 for radius 0). For each threshold t_j the plan fixes,
before any sample is drawn, a one-sided test of H_j: pA <= t_j: at look k (m_k samples) it
rejects when the votes S reach c_jk. The c_jk are computed exactly (a recursion over the
distribution of S, ``upper_boundaries``) so that for pA = t_j the chance that S ever reaches
them, over all the looks up to n_max, is at most alpha; for pA < t_j the votes are smaller
path by path (same uniforms), so the chance is smaller still. Stopping early, at any time the
data suggest, can only remove chances to reject, so each test keeps its level whatever the
stopping rule is, the futility rule included. The certificate is the largest r_j whose test
and every lower one rejected (c_jk rises with t_j, so a look that rejects H_j rejects all
lower ones). It is false only if some H_j with t_j >= pA rejected, hence H_i rejected for
the smallest such t_i: at most alpha (the hypotheses are nested, so each is tested at the
full alpha, as in closed testing). The selection samples are drawn before and apart from
these, so conditionally on the selected class the argument holds for its pA, as in CERTIFY.

How alpha is spent over the looks (``spending``): nothing before the look where unanimous
votes first prove t_j, a share there (where a confident image stops, near the floor
ln(1 / alpha) / -ln t_j samples), the next share spread over the later looks evenly in
log m (for images a little above t_j), and the rest at n_max, where the test is then close
to CERTIFY's (an image at a threshold gets CERTIFY's answer).

The futility test only decides when to stop, never what is certified: the plan stops for
futility once the votes fall below boundaries that an image whose pA makes CERTIFY's final
test a coin flip crosses with chance at most ``futility`` over all the looks (the same
recursion, from below). Its level trades samples for agreement with CERTIFY; validity does
not depend on it.
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

UNANIMOUS_SHARE = 0.4  # of alpha, at each threshold's unanimous look
SPREAD_SHARE = 0.3  # of alpha, over the later looks, evenly in log m; the rest at n_max
_TAIL_SD = 14.0  # the recursions drop states this many sd beyond the mean: mass < 1e-40


def _binomial_steps(step: int, p: float) -> tuple[int, np.ndarray]:
    """The pmf of Binomial(step, p) from its first count within _TAIL_SD sd of the mean."""
    from scipy.stats import binom

    sd = math.sqrt(step * p * (1 - p))
    lo = max(0, int(step * p - _TAIL_SD * sd) - 2)
    hi = min(step, int(step * p + _TAIL_SD * sd) + 2)
    return lo, binom.pmf(np.arange(lo, hi + 1), step, p)


def upper_boundaries(p: float, looks: Sequence[int], spend: Sequence[float]) -> np.ndarray:
    """Rejection boundaries c_k for votes S_k ~ Binomial(m_k, p) observed at the looks: the
    least c_k such that the chance of S reaching c_j at some look j <= k is at most the
    cumulative ``spend[k]`` (c_k = m_k + 1 where no count can be spent). Exact up to the mass
    dropped beyond _TAIL_SD sd below the mean, and a relative margin for rounding."""
    lo, mass, drawn, spent, bounds = 0, np.ones(1), 0, 0.0, []
    for m, allowed in zip(looks, spend, strict=True):
        step_lo, steps = _binomial_steps(m - drawn, p)
        # a direct sum, not an FFT: the tails it is read for stay exact to rounding
        mass, lo, drawn = np.convolve(mass, steps), lo + step_lo, m
        cut = max(0, int(m * p - _TAIL_SD * math.sqrt(m * p * (1 - p))) - 2 - lo)
        mass, lo = mass[cut:], lo + cut
        # tail[i]: chance of S >= lo + i and no rejection yet (0 past the last state)
        tail = np.append(np.cumsum(mass[::-1])[::-1], 0.0)
        fits = np.flatnonzero(tail <= (allowed - spent) * (1 - 1e-9))
        if len(fits) and lo + fits[0] <= m:
            spent += tail[fits[0]]
            mass = mass[:fits[0]]
            bounds.append(lo + fits[0])
        else:
            bounds.append(m + 1)
    return np.array(bounds, dtype=np.int64)


def lower_boundaries(p: float, looks: Sequence[int], spend: Sequence[float]) -> np.ndarray:
    """Futility boundaries f_k: the greatest f_k such that the chance of S falling below f_j
    at some look j <= k is at most ``spend[k]`` (the mirror of ``upper_boundaries``)."""
    mirrored = upper_boundaries(1 - p, looks, spend)  # m - S counts the other votes
    return np.asarray(looks, dtype=np.int64) - mirrored + 1


class SequentialPlan:
    """When to stop drawing estimation samples, and the grid radius certified then.

    The looks are ``first_look * growth**k`` (rounded up) below ``n_max``, then ``n_max``,
    plus for every threshold the look where unanimous votes first prove it. Thresholds that
    no look can prove are left out (their radius is beyond reach of n_max samples). After
    each look ``step`` updates the largest threshold proven so far and says whether to stop:
    the largest reachable one is proven, the next one is futile, or n_max is reached.
    """

    def __init__(self, *, sigma: float, alpha: float, n_max: int, radii: Sequence[float],
                 first_look: int, growth: float, futility: float = 0.05,
                 unanimous_share: float = UNANIMOUS_SHARE, spread_share: float = SPREAD_SHARE):
        check_positive_float("sigma", sigma)
        check_probability("certify.alpha", alpha)
        check_positive_int("certify.n_max", n_max)
        check_positive_int("certify.first_look", first_look)
        check_above("certify.growth", growth, 1)
        check_probability("certify.futility", futility)
        if unanimous_share < 0 or spread_share < 0 or unanimous_share + spread_share >= 1:
            raise ValueError("the shares of alpha must be >= 0 and leave some for n_max, got "
                             f"{unanimous_share} and {spread_share}")
        self.sigma, self.alpha, self.n_max = float(sigma), float(alpha), int(n_max)
        self.radii = check_radii(radii)
        self.first_look, self.growth, self.futility = int(first_look), float(growth), futility
        self.unanimous_share, self.spread_share = float(unanimous_share), float(spread_share)
        from scipy.stats import norm  # here: slow to import, and only this plan needs it

        # radius 0 is "certified at all" (pA >= 1/2); a grid radius keeps its exact value
        grid = {0.5: 0.0}
        for r in self.radii:
            t = float(norm.cdf(r / self.sigma))
            if r > 0 and t < 1.0:  # Phi rounds to 1 beyond 8 sigma: never provable
                grid.setdefault(t, r)
        candidates = sorted(grid)

        geometric, m = [], self.first_look
        while m < self.n_max:
            geometric.append(m)
            m = max(m + 1, math.ceil(m * self.growth))
        unanimous = {t: self.unanimous_look(t) for t in candidates}
        self.looks = tuple(sorted({*geometric, self.n_max,
                                   *(u for u in unanimous.values() if u < self.n_max)}))
        looks = np.array(self.looks)
        upper = []
        for t in candidates:
            bounds = self.boundaries(t, unanimous[t])
            if upper:  # a higher threshold never rejects where a lower one does not
                bounds = np.maximum(bounds, upper[-1])
            if not (bounds <= looks).any():
                break  # this threshold and every higher one are out of reach
            upper.append(bounds)
        self.thresholds = np.array(candidates[:len(upper)])
        self.grid_radii = tuple(grid[t] for t in self.thresholds)
        self.upper = np.array(upper).reshape(len(upper), len(looks))
        # futility for threshold j: tuned at the pA where its final test is a coin flip
        per_look = self.futility * np.arange(1, len(looks) + 1) / max(len(looks) - 1, 1)
        self.lower = np.array([
            lower_boundaries(min(c[-1] / self.n_max, 1 - 1e-12), self.looks, per_look)
            for c in self.upper]).reshape(self.upper.shape)
        self.lower[:, -1] = 0  # the last look stops anyway

    def unanimous_look(self, t: float) -> int:
        """The least m at which m unanimous votes prove t with the unanimous share of alpha:
        t^m <= share * alpha, near the floor ln(1 / alpha) / -ln t."""
        share = self.unanimous_share * self.alpha
        return max(1, math.ceil(math.log(share) / math.log(t) - 1e-9)) if share > 0 \
            else self.n_max

    def boundaries(self, t: float, unanimous: int) -> np.ndarray:
        """The votes at each look that reject H: pA <= t (more than the look's samples: none)."""
        return upper_boundaries(t, self.looks,
                                self.spending(t, np.array(self.looks), unanimous))

    def spending(self, t: float, looks: np.ndarray, unanimous: int) -> np.ndarray:
        """The alpha the test of threshold t may have spent by each look (cumulative)."""
        if unanimous >= self.n_max:
            spread = np.zeros(len(looks))
        else:
            span = math.log(self.n_max / unanimous)
            later = np.clip(np.log(np.maximum(looks, unanimous) / unanimous) / span, 0, 1)
            spread = np.where(looks >= unanimous,
                              self.unanimous_share + self.spread_share * later, 0.0)
        spend = self.alpha * np.minimum(spread, self.unanimous_share + self.spread_share)
        spend[-1] = self.alpha
        return spend

    # --------------------------------------------------------------------------- sampling

    def step(self, look: int, votes, proven):
        """After look ``look`` (an index into ``looks``) with ``votes`` for the selected class
        and ``proven`` the index of the largest threshold proven so far (-1: none): the new
        index, and whether to stop. Works elementwise on arrays (a simulation's many images)."""
        votes = np.asarray(votes)
        crossed = (votes[..., None] >= self.upper[:, look]).sum(axis=-1) - 1
        proven = np.maximum(proven, crossed)
        top = len(self.thresholds) - 1
        following = np.minimum(proven + 1, top)
        futile = votes < self.lower[following, look]
        stop = (proven >= top) | futile | (look == len(self.looks) - 1)
        return proven, stop

    def run(self, draw: Callable[[int], int]) -> tuple[int, int, int]:
        """Draw ``draw(k)`` (votes for the selected class among k new samples) look by look
        until the answer is settled; return (votes, samples drawn, index of the largest
        threshold proven or -1)."""
        votes = drawn = 0
        proven = -1
        for look, m in enumerate(self.looks):
            votes += int(draw(m - drawn))
            drawn = m
            proven, stop = self.step(look, votes, proven)
            proven = int(proven)
            if stop:
                break
        return votes, drawn, proven

    def certified(self, proven: int) -> tuple[float, float]:
        """(the pA bound, the radius) of a certificate proving threshold ``proven``."""
        return float(self.thresholds[proven]), float(self.grid_radii[proven])

    # ------------------------------------------------------------------------------ PREDICT

    def predict_looks(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """PREDICT's looks and levels: ``first_look`` doubling up to n_max, the union bound
        over them (half of alpha at n_max, where a near tie ends up)."""
        looks, m = [], self.first_look
        while m < self.n_max:
            looks.append(m)
            m *= 2
        looks.append(self.n_max)
        if len(looks) == 1:
            return tuple(looks), (self.alpha,)
        early = self.alpha / (2 * (len(looks) - 1))
        return tuple(looks), (early,) * (len(looks) - 1) + (self.alpha / 2,)

    def parameters(self) -> dict:
        return {"n_max": self.n_max, "radii": self.radii, "first_look": self.first_look,
                "growth": self.growth, "futility": self.futility,
                "looks": list(self.looks),
                "thresholds": [float(t) for t in self.thresholds]}
