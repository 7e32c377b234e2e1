"""The adaptive certification method: its guarantee by simulation, its early stops, and the
same noise as CERTIFY's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from certify_fixtures import Constant, Threshold, pixel, pixel_for
from scipy.stats import binom, norm

from dmae.certify import (
    ABSTAIN,
    MISMATCH,
    Prediction,
    SequentialPlan,
    build_certifier,
)
from dmae.certify.sequential import upper_boundaries
from dmae.config import ConfigError, validate

# A setting where the test has power: a large alpha and a radius grid whose thresholds the
# simulated pA values sit on.
SIM = {"sigma": 0.5, "alpha": 0.1, "n_max": 2000, "radii": [0.0, 0.25, 0.5, 0.75, 1.0],
       "first_look": 10, "growth": 1.2, "futility": 0.05}
TRIALS = 20_000  # per probability


class EveryLookAtFullAlpha(SequentialPlan):
    """A deliberately invalid plan: each look's own binomial test at level alpha, as if it
    were the only look."""

    def boundaries(self, t: float, unanimous: int) -> np.ndarray:
        return binom.isf(self.alpha, np.array(self.looks), t).astype(np.int64) + 1


class TwiceAlpha(SequentialPlan):
    """A near miss: the plan's own recursion, spending 2 alpha."""

    def spending(self, t, looks, unanimous):
        return 2 * super().spending(t, looks, unanimous)


def simulate(plan: SequentialPlan, p: float, trials: int, seed: int) -> tuple:
    """The plan's own stopping rule (``step``) on ``trials`` Bernoulli(p) vote streams of the
    selected class: the index of the threshold each proves (-1: none) and samples drawn."""
    rng = np.random.default_rng(seed)
    votes, drawn = np.zeros(trials, np.int64), np.zeros(trials, np.int64)
    proven, active = np.full(trials, -1), np.ones(trials, bool)
    before = 0
    for look, m in enumerate(plan.looks):
        idx = np.flatnonzero(active)
        votes[idx] += rng.binomial(m - before, p, len(idx))
        drawn[idx], before = m, m
        proven[idx], stop = plan.step(look, votes[idx], proven[idx])
        active[idx[stop]] = False
        if not active.any():
            break
    return proven, drawn


def false_rate(plan: SequentialPlan, p: float, seed: int) -> float:
    """The share of certificates at a radius at least the true one, sigma * Phi^-1(p): a
    proven threshold t >= p. At p exactly on a threshold this counts the certificate of
    that radius too (stricter than the guarantee, radius > true radius), which is where
    each threshold's test spends all of its alpha."""
    proven, _ = simulate(plan, p, TRIALS, seed)
    certified = proven >= 0
    return float(np.mean(certified & (plan.thresholds[np.maximum(proven, 0)] >= p)))


def test_false_certificates_stay_within_alpha_and_invalid_plans_are_caught():
    """At every grid threshold, at every futility test's reference pA (where CERTIFY's final
    test is a coin flip), and for a minority class selected (pA 0.45: any certificate is
    false), 20,000 vote streams each."""
    plan = SequentialPlan(**SIM)
    assert len(plan.thresholds) == 5  # every grid radius reachable: every test is checked
    references = [c / plan.n_max for c in plan.upper[:, -1]]
    points = sorted({*plan.thresholds.tolist(), *references, 0.45})
    limit = SIM["alpha"] + 3 * math.sqrt(SIM["alpha"] * (1 - SIM["alpha"]) / TRIALS)
    rates = {p: false_rate(plan, p, seed=i) for i, p in enumerate(points)}
    assert all(rate <= limit for rate in rates.values()), rates
    # the recursion spends the whole alpha where it may: the check has the power to see more
    assert min(rates[t] for t in plan.thresholds) > 0.8 * SIM["alpha"], rates
    for invalid in (EveryLookAtFullAlpha, TwiceAlpha):
        wrong = invalid(**SIM)
        caught = [p for i, p in enumerate(points) if false_rate(wrong, p, seed=i) > limit]
        assert caught, invalid.__name__


def crossing_probability(p: float, looks: list[int], bounds: list[int]) -> float:
    """The chance that Binomial votes reach a boundary at some look, by brute force: every
    path of counts between the looks."""
    paths = {0: 1.0}
    total, before = 0.0, 0
    for m, c in zip(looks, bounds, strict=True):
        after: dict[int, float] = {}
        for votes, mass in paths.items():
            for k in range(m - before + 1):
                after[votes + k] = after.get(votes + k, 0.0) + mass * binom.pmf(k, m - before, p)
        total += sum(mass for votes, mass in after.items() if votes >= c)
        paths = {votes: mass for votes, mass in after.items() if votes < c}
        before = m
    return total


def test_the_boundaries_spend_exactly_what_they_may():
    looks, p = [5, 9, 14, 20, 30], 0.7
    spend = [0.0, 0.01, 0.02, 0.03, 0.05]
    bounds = upper_boundaries(p, looks, spend)
    for k in range(len(looks)):
        spent = crossing_probability(p, looks[:k + 1], bounds[:k + 1].tolist())
        assert spent <= spend[k] + 1e-12
        # one vote less at this look would spend more than it may
        lower = [*bounds[:k].tolist(), int(bounds[k]) - 1]
        if lower[-1] >= 0:
            assert crossing_probability(p, looks[:k + 1], lower) > spend[k]
    assert bounds[0] == 6  # nothing to spend: no count at the first look rejects


def test_the_looks_are_fixed_before_sampling_and_reach_the_floor():
    alpha = 0.001
    plan = SequentialPlan(sigma=0.25, alpha=alpha, n_max=100_000, first_look=10, growth=1.2,
                          radii=[0.25, 0.5, 0.75, 1.0, 3.0])  # Phi(12) is 1.0 in floats
    looks = plan.looks
    assert looks[-1] == 100_000 and list(looks) == sorted(set(looks))
    # radius 1.0 at sigma 0.25 needs pA >= Phi(4): beyond 100,000 samples, so left out (3.0 too)
    assert plan.thresholds.tolist() == pytest.approx(norm.cdf([0, 1, 2, 3]).tolist())
    assert plan.grid_radii == (0.0, 0.25, 0.5, 0.75)
    for j, t in enumerate(plan.thresholds):
        floor = math.log(1 / alpha) / -math.log(t)  # no test proves t from fewer samples
        first = next(m for k, m in enumerate(looks) if plan.upper[j, k] <= m)
        assert first == plan.unanimous_look(t) and floor <= first <= 1.2 * floor + 1
        assert plan.upper[j, -1] >= binom.isf(alpha, 100_000, t) + 1  # never above CERTIFY
    assert (np.diff(plan.upper, axis=0) >= 0).all()  # a higher threshold asks more votes


def test_the_futility_test_stops_an_image_below_a_threshold_and_only_decides_when():
    plan = SequentialPlan(**{**SIM, "n_max": 100_000, "alpha": 0.001})
    t = plan.thresholds[2]  # radius 0.5
    proven, drawn = simulate(plan, t - 0.02, 2000, seed=3)
    assert (proven == 1).all()  # radius 0.25 proven, 0.5 not
    assert np.median(drawn) < 5000  # not run to n_max: futility stopped it
    strict = SequentialPlan(**{**SIM, "n_max": 100_000, "alpha": 0.001, "futility": 1e-9})
    assert (strict.upper == plan.upper).all()  # what is certified does not depend on it
    assert np.median(simulate(strict, t - 0.02, 2000, seed=3)[1]) > np.median(drawn)


def test_a_confident_image_stops_at_the_first_look_that_proves_its_largest_radius():
    sigma, radii = 0.5, [0.0, 0.5, 1.0]
    smooth = build_certifier("adaptive", Constant(), 3, sigma, n0=100, n=10_000, alpha=0.001,
                             radii=radii, batch_size=512)
    cert = smooth.certify(pixel(0.3), smooth.generator(0, 0))
    plan = smooth.method.plan(sigma)
    top = norm.cdf(1.0 / sigma)
    assert cert.prediction == 2 and cert.n_used == cert.n_a == plan.unanimous_look(top)
    assert cert.n0_used == 10  # selection stopped on 10 unanimous votes
    assert cert.radius == 1.0 and cert.p_a_lower == pytest.approx(top)


def test_the_estimation_samples_are_the_first_ones_of_certify():
    """Same generator, same n0: the adaptive votes equal CERTIFY's over as many samples, also
    where the selection stopped early (its noise is drawn all the same)."""
    sigma = 0.5
    kwargs = {"num_classes": 2, "sigma": sigma, "n0": 30, "alpha": 0.01, "batch_size": 64}
    adaptive = build_certifier("adaptive", Threshold(), n=3000, radii=[0.0, 0.25, 0.5],
                               first_look=40, **kwargs)
    used, selections = set(), set()
    for idx, p_a in enumerate([0.55, 0.69, 0.8, 0.9, 0.999]):
        cert = adaptive.certify(pixel_for(p_a, sigma), adaptive.generator(4, idx))
        used.add(cert.n_used)
        selections.add(cert.n0_used)
        cohen = build_certifier("cohen", Threshold(), n=cert.n_used, **kwargs)
        same = cohen.certify(pixel_for(p_a, sigma), cohen.generator(4, idx))
        assert same.n_a == cert.n_a
    assert len(used) > 2  # the images stopped at different looks
    assert selections == {10, 30}  # and selected from 10 unanimous votes or from n0


def test_the_result_does_not_depend_on_batch_size():
    certs = []
    for batch_size in (7, 100, 1000):
        smooth = build_certifier("adaptive", Threshold(), 2, 0.5, n0=10, n=2000, alpha=0.01,
                                 radii=[0.0, 0.25], batch_size=batch_size)
        certs.append(smooth.certify(pixel_for(0.7, 0.5), smooth.generator(5, 42)))
    assert certs[0] == certs[1] == certs[2]


def test_a_misclassified_image_stops_after_selection_only_when_asked():
    kwargs = {"num_classes": 3, "sigma": 0.5, "n0": 50, "n": 1000, "alpha": 0.001,
              "radii": [0.0, 0.5]}
    stopping = build_certifier("adaptive", Constant(), stop_on_mismatch=True, **kwargs)
    cert = stopping.certify(pixel(0.3), stopping.generator(0, 0), label=1)
    assert (cert.prediction, cert.radius, cert.n_used, cert.n0_used) == (MISMATCH, 0.0, 0, 10)
    assert stopping.certify(pixel(0.3), stopping.generator(0, 0), label=2).prediction == 2
    default = build_certifier("adaptive", Constant(), **kwargs)
    cert = default.certify(pixel(0.3), default.generator(0, 0), label=1)
    assert cert.prediction == 2 and cert.n_used > 0


def test_predict_answers_a_clear_case_early_and_abstains_on_a_coin_flip():
    sigma = 0.25
    smooth = build_certifier("adaptive", Threshold(), 2, sigma, n0=1, n=1000, alpha=0.001,
                             radii=[0.0], batch_size=500)
    looks, levels = smooth.method.plan(sigma).predict_looks()
    assert looks == (10, 20, 40, 80, 160, 320, 640, 1000)
    assert sum(levels) == pytest.approx(0.001) and levels[-1] == 0.0005
    # 10 votes of 10 are not enough at level alpha / 14 (p-value 2 / 2^10), 20 of 20 are
    assert smooth.predict(pixel(0.5 - 3 * sigma), smooth.generator(1, 0)) == Prediction(0, 20)
    coin = [smooth.predict(pixel(0.5), smooth.generator(1, i)) for i in range(5)]
    assert coin == [Prediction(ABSTAIN, 1000)] * 5


@pytest.mark.parametrize("settings, message", [
    ({"n_max": 50}, "certify.n_max must be >= certify.n0"),
    ({"radii": []}, "certify.radii must be a non-empty list"),
    ({"radii": [0.5, 0.25]}, "certify.radii must be sorted"),
    ({"radii": [0.25, 0.25]}, "certify.radii must be sorted"),
    ({"radii": [-0.5]}, "certify.radii must hold finite numbers >= 0"),
    ({"alpha": 1.0}, "alpha must lie in"),
    ({"alpha": 0.0}, "alpha must lie in"),
    ({"growth": 1.0}, "certify.growth must be a number > 1"),
    ({"first_look": 0}, "certify.first_look must be an integer >= 1"),
    ({"futility": 0.0}, "certify.futility must lie in"),
    ({"futility": 1.0}, "certify.futility must lie in"),
    ({"selection_look": 0}, "certify.selection_look must be an integer >= 1"),
])
def test_bad_settings_are_refused_before_any_sampling(settings, message):
    class Untouchable(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("no sample may be drawn")

    kwargs = {"n0": 100, "n": 1000, "alpha": 0.001, "radii": [0.0, 0.5], **settings}
    with pytest.raises(ValueError, match=message):
        build_certifier("adaptive", Untouchable(), 2, 0.5, **kwargs)


def smoke_config(repo) -> dict:
    return yaml.safe_load((repo / "config" / "smoke.yaml").read_text())


@pytest.mark.parametrize("certify, report, message", [
    ({"method": "adaptive", "n_max": 5}, None, "certify.n_max must be >= certify.n0"),
    ({"method": "adaptive", "radii": [0.5, 0.25]}, None, "certify.radii must be sorted"),
    ({"method": "adaptive"}, [0.5, 0.0],
     r"sorted .* got \[0.5, 0.0\] \(certify.radii: null, so the value of report.radii\)"),
    ({"method": "adaptive", "radii": []}, None, r"certify.radii: \[\] should be non-empty"),
    ({"method": "sequential"}, None, "certify.method: 'sequential' is not one of"),
    ({"alpha": 1.0}, None, "certify.alpha"),
    ({"n": 5}, None, "n must be >= n0, got n=5, n0=10"),
])
def test_a_config_with_bad_certification_settings_names_the_key(repo, certify, report, message):
    cfg = smoke_config(repo)
    cfg["certify"].update(certify)
    if report is not None:
        cfg["report"]["radii"] = report
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_an_adaptive_config_settles_the_report_grid_unless_it_has_its_own(repo):
    cfg = smoke_config(repo)
    cfg["certify"]["method"] = "adaptive"
    filled = validate(cfg)
    assert filled["certify"]["radii"] == filled["report"]["radii"]
    assert filled["certify"]["n_max"] is None  # the certifier's budget is then n
    cohen = validate(smoke_config(repo))
    assert "radii" not in cohen["certify"]
