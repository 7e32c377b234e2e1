"""The guarantees, by simulation on the real code: CERTIFY's false certificates and PREDICT's
wrong answers stay within alpha, for both methods, at each probability checked on its own;
the ACR interval covers the true mean. Each test also runs a near miss, the same real code at
twice the level (or an interval a little too narrow), which must fail the same check, so the
check has the power to see a small error, not only a gross one.

The base classifier votes class 0 when its one noisy pixel is below a threshold, so the
probability pA of the top class, and so the true radius sigma * Phi^-1(pA), is known exactly
(certify_fixtures.Threshold). Each certify() or predict() call is a real one: its own noise
stream, the real sampling, selection, counting and bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from certify_fixtures import Threshold, pixel_for
from scipy import integrate
from scipy.stats import beta, binom, norm

from dmae.certify import (
    ABSTAIN,
    Certifier,
    SequentialPlan,
    build_certifier,
)
from dmae.report.analysis import CONFIDENCE, acr_interval, mean_interval

pytestmark = pytest.mark.slow  # about a minute of real calls in all

SIGMA, ALPHA, N0, N = 0.5, 0.1, 10, 100
RADII = [0.0, 0.25, 0.5, 0.75]  # the adaptive method's grid
CALLS = 20_000  # real calls per method, spread over its probabilities


def limit(alpha: float, trials: int) -> float:
    """alpha plus three standard errors of a rate measured in ``trials`` calls."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def cohen(alpha: float = ALPHA) -> Certifier:
    return build_certifier("cohen", Threshold(), 2, SIGMA, n0=N0, n=N, alpha=alpha,
                           batch_size=128)


def adaptive(alpha: float = ALPHA, n_max: int = 400) -> Certifier:
    return build_certifier("adaptive", Threshold(), 2, SIGMA, n0=N0, n=N, alpha=alpha,
                           radii=RADII, n_max=n_max, first_look=10, growth=1.5,
                           batch_size=128)


class SpendingTwiceAlpha(SequentialPlan):
    """The near miss of a sequential plan: its looks as planned, each threshold's boundaries
    from the same recursion but spending 2 alpha."""

    def spending(self, t, looks, unanimous):
        return 2 * super().spending(t, looks, unanimous)


class LastLookAtTwiceAlpha(SequentialPlan):
    """A near miss of PREDICT's looks: the earlier ones as planned, the last one, where an
    image at a tie ends up, at 2 alpha as if it were the only one. (Levels that merely sum to
    2 alpha err by a fifth too little to be seen in a test of this size: the union bound
    leaves slack.)"""

    def predict_looks(self):
        looks, levels = super().predict_looks()
        return looks, (*levels[:-1], 2 * self.alpha)


def with_plan(certifier: Certifier, plan_class: type) -> Certifier:
    """The adaptive ``certifier`` with its plan at SIGMA made by ``plan_class``."""
    plan = certifier.method.plan(SIGMA)
    certifier.method.plans[SIGMA] = plan_class(
        sigma=plan.sigma, alpha=plan.alpha, n_max=plan.n_max, radii=plan.radii,
        first_look=plan.first_look, growth=plan.growth, futility=plan.futility)
    return certifier


def false_certificates(certifier, p_a: float, trials: int, seed: int) -> float:
    """The share of real certify() calls whose certificate is false: the minority class, or
    a radius beyond the true one."""
    x, true_radius = pixel_for(p_a, SIGMA), SIGMA * norm.ppf(p_a)
    false = 0
    for idx in range(trials):
        cert = certifier.certify(x, certifier.generator(seed, idx))
        if cert.prediction != ABSTAIN and (cert.prediction != 0
                                           or cert.radius > true_radius + 1e-12):
            false += 1
    return false / trials


def cohen_false_rate(p_a: float, alpha: float) -> float:
    """The exact chance of a false certificate of Cohen's CERTIFY (2 classes, n0, n): the
    selection, then the Clopper-Pearson bound of the selected class's count."""
    k0 = np.arange(N0 + 1)
    top = binom.pmf(k0, N0, p_a)[2 * k0 >= N0].sum()  # argmax ties go to class 0, the top
    k = np.arange(1, N + 1)
    lower = beta.ppf(alpha, k, N - k + 1)
    false_top = binom.pmf(k, N, p_a)[(lower >= 0.5) & (lower > p_a)].sum()
    false_other = binom.pmf(k, N, 1 - p_a)[lower >= 0.5].sum()
    return top * false_top + (1 - top) * false_other


GRID = np.linspace(0.55, 0.99, 441)  # where the worst probability of a level is looked for


def worst_p(rate) -> float:
    return float(GRID[int(np.argmax([rate(p) for p in GRID]))])


def test_cohen_certify_keeps_alpha_at_each_probability_and_a_2_alpha_bound_is_caught():
    worst, worst_2a = worst_p(lambda p: cohen_false_rate(p, ALPHA)), worst_p(
        lambda p: cohen_false_rate(p, 2 * ALPHA))
    p_values = [0.6, 0.8, 0.95, worst, worst_2a]
    trials = CALLS // len(p_values)
    for i, p_a in enumerate(p_values):
        rate = false_certificates(cohen(), p_a, trials, seed=i)
        assert rate <= limit(ALPHA, trials), (p_a, rate)
        # the simulation measures what the exact computation says it should
        exact = cohen_false_rate(p_a, ALPHA)
        assert abs(rate - exact) <= 4 * math.sqrt(max(exact, 1e-4) / trials), (p_a, rate, exact)
    near_miss = false_certificates(cohen(2 * ALPHA), worst_2a, trials, seed=99)
    assert near_miss > limit(ALPHA, trials), (worst_2a, near_miss)


def test_adaptive_certify_keeps_alpha_at_each_threshold_and_a_2_alpha_plan_is_caught():
    """A hair below each threshold of the grid (where a certificate of that radius is false,
    and its test spends nearly all of alpha) and exactly at each (where it is just true),
    checked one probability at a time; the near miss spends 2 alpha by the same recursion."""
    thresholds = [float(norm.cdf(r / SIGMA)) for r in RADII]
    p_values = [t - 0.002 for t in thresholds] + thresholds
    trials = CALLS // len(p_values)
    rates = {}
    for i, p_a in enumerate(p_values):
        rates[p_a] = false_certificates(adaptive(), p_a, trials, seed=100 + i)
        assert rates[p_a] <= limit(ALPHA, trials), (p_a, rates[p_a])
    worst = max(rates, key=rates.get)
    near_miss = false_certificates(with_plan(adaptive(), SpendingTwiceAlpha), worst, trials,
                                   seed=199)
    assert near_miss > limit(ALPHA, trials), (worst, near_miss)


def wrong_answers(certifier, p_a: float, trials: int, seed: int) -> float:
    """The share of real predict() calls that answer the minority class."""
    x = pixel_for(p_a, SIGMA)
    return sum(certifier.predict(x, certifier.generator(seed, i)).prediction == 1
               for i in range(trials)) / trials


@pytest.mark.parametrize("valid, near_miss", [
    (cohen, lambda: cohen(2 * ALPHA)),  # its test at 2 alpha
    (lambda: adaptive(n_max=N), lambda: with_plan(adaptive(n_max=N), LastLookAtTwiceAlpha)),
], ids=["cohen", "adaptive"])
def test_predict_answers_the_minority_class_within_alpha_even_a_hair_below_a_tie(valid,
                                                                                 near_miss):
    """PREDICT's guarantee is a wrong answer with probability at most alpha; with two classes
    a two-sided test errs on one side only, so at most alpha / 2, which is the check here and
    what a test at 2 alpha fails. pA just above pB is where it is hardest to keep."""
    trials = 5_000
    for i, p_a in enumerate([0.501, 0.52]):
        rate = wrong_answers(valid(), p_a, trials, seed=300 + i)
        assert rate <= limit(ALPHA / 2, trials), (p_a, rate)
    rate = wrong_answers(near_miss(), 0.501, trials, seed=399)
    assert rate > limit(ALPHA / 2, trials), rate


# ----------------------------------------------------------------------------- the ACR interval

CEILING = SIGMA * norm.ppf(0.001 ** (1 / 1000))  # the default's largest certifiable radius
ZERO = 0.4  # wrong or abstained images count 0


def draw_radii(rng: np.random.Generator, size: int) -> np.ndarray:
    """Radii times correct of ``size`` images: 0 with chance ZERO, else sigma * Phi^-1(u) for
    u uniform above one half, capped at the ceiling: skewed, with a mass at the cap, as real
    ones are."""
    radius = np.minimum(SIGMA * norm.ppf(rng.uniform(0.5, 1.0, size)), CEILING)
    return np.where(rng.uniform(size=size) < ZERO, 0.0, radius)


def true_acr() -> float:
    capped, _ = integrate.quad(lambda u: min(SIGMA * norm.ppf(u), CEILING), 0.5, 1.0,
                               limit=200)
    return (1 - ZERO) * 2 * capped


def interval_coverage(level: float, runs: int, images: int = 500) -> float:
    """How often the table's ACR interval holds the true ACR, over ``runs`` simulated runs of
    ``images`` certified images (report.analysis.mean_interval, which acr_interval applies to
    a run's radius times correct)."""
    rng, mean, held = np.random.default_rng(5), true_acr(), 0
    for _ in range(runs):
        lo, hi = mean_interval(draw_radii(rng, images), level)
        held += lo <= mean <= hi
    return held / runs


def test_the_acr_interval_covers_the_true_acr_and_a_narrower_one_is_caught():
    radius = draw_radii(np.random.default_rng(0), 500)
    rows = pd.DataFrame({"radius": radius, "correct": (radius > 0).astype(int)})
    assert acr_interval(rows) == mean_interval(radius)  # what the tables state
    runs = 20_000
    floor = CONFIDENCE - 3 * math.sqrt(CONFIDENCE * (1 - CONFIDENCE) / runs)
    assert interval_coverage(CONFIDENCE, runs) >= floor
    assert interval_coverage(0.93, runs) < floor  # 2 points of nominal coverage short
