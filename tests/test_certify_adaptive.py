"""The adaptive certification method: its guarantee by simulation, its early stops, and the
same noise as CERTIFY's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from certify_fixtures import Constant, Threshold, pixel, pixel_for
from scipy.stats import norm

from dmae.certify import (
    ABSTAIN,
    Prediction,
    SequentialPlan,
    build_certifier,
)
from dmae.config import ConfigError, validate

# A setting where the test has power: a large alpha and a radius grid whose thresholds the
# simulated pA values straddle.
SIM = {"sigma": 0.5, "alpha": 0.1, "n_max": 2000, "radii": [0.0, 0.25, 0.5, 0.75, 1.0],
       "first_look": 50, "growth": 2.0}
SIM_N0 = 20


class EveryLookAtFullAlpha(SequentialPlan):
    """A deliberately invalid plan: every look's bound at level alpha, no union bound."""

    def split_alpha(self, looks: int) -> tuple[float, ...]:
        return (self.alpha,) * looks


def false_certificate_rate(plan: SequentialPlan, trials_per_p: int, seed: int) -> tuple:
    """CERTIFY with a Bernoulli base classifier (class 0 with probability pA, else class 1):
    n0 selection votes, then the plan's looks on binomial draws. A false certificate is a
    certified class whose true probability is below the reported pA_lower, i.e. a radius
    beyond sigma * Phi^-1(p) of the class (any certificate of the minority class is one)."""
    rng = np.random.default_rng(seed)
    thresholds = [norm.cdf(r / plan.sigma) for r in plan.radii]
    # just below each threshold (where a false certificate is one look away) and above it
    p_values = sorted({t + d for t in thresholds for d in (-0.01, 0.005)})
    false = 0
    for p_a in p_values:
        for _ in range(trials_per_p):
            selected_top = rng.binomial(SIM_N0, p_a) * 2 >= SIM_N0
            p = p_a if selected_top else 1 - p_a
            votes, drawn = plan.run(lambda k, p=p: rng.binomial(k, p))
            lower = plan.bound(votes, drawn)
            false += bool(lower >= 0.5 and lower > p)
    trials = trials_per_p * len(p_values)
    return false / trials, trials


def test_false_certificates_stay_below_alpha_and_the_invalid_plan_is_caught():
    plan = SequentialPlan(**SIM)
    rate, trials = false_certificate_rate(plan, 2000, seed=0)
    assert trials >= 20_000
    limit = SIM["alpha"] + 3 * math.sqrt(SIM["alpha"] * (1 - SIM["alpha"]) / trials)
    assert rate <= limit
    # The same simulation flags a plan that looks at every round with the full alpha.
    naive_rate, _ = false_certificate_rate(EveryLookAtFullAlpha(**SIM), 2000, seed=1)
    assert naive_rate > limit


def test_the_looks_are_fixed_before_sampling_and_end_at_n_max():
    plan = SequentialPlan(sigma=0.25, alpha=0.001, n_max=100_000, first_look=100, growth=2.0,
                          radii=[0.25, 0.5, 0.75, 1.0, 3.0])  # Phi(12) is 1.0 in floats
    looks = plan.looks
    assert looks[0] == 100 and looks[-1] == 100_000 and list(looks) == sorted(set(looks))
    # the union bound: the levels sum to alpha, half of it at the last look
    assert sum(plan.levels) == pytest.approx(0.001) and plan.levels[-1] == 0.001 / 2
    assert len(set(plan.levels[:-1])) == 1
    # radius 1.0 at sigma 0.25 needs pA >= Phi(4): beyond 100,000 samples, so left out (3.0 too)
    assert plan.thresholds.tolist() == pytest.approx(norm.cdf([0, 1, 2, 3]).tolist())
    # for each reachable radius a look close to the least sample size that can prove it
    early = plan.levels[0]
    for t in plan.thresholds:
        least = math.ceil(math.log(early) / math.log(t))
        first = next(m for m in looks if early ** (1 / m) >= t)
        assert first <= max(1.02 * least, looks[0])


def test_a_confident_image_stops_at_the_first_look_that_proves_its_largest_radius():
    sigma, radii = 0.5, [0.0, 0.5, 1.0]
    smooth = build_certifier("adaptive", Constant(), 3, sigma, n0=100, n=10_000, alpha=0.001,
                             radii=radii, batch_size=512)
    cert = smooth.certify(pixel(0.3), smooth.generator(0, 0))
    level = smooth.method.plan(sigma).levels[0]  # an early look's
    needed = math.ceil(math.log(level) / math.log(norm.cdf(1.0 / sigma)))
    assert cert.prediction == 2 and cert.n_used == cert.n_a
    assert needed <= cert.n_used < 2 * needed and cert.n_used < 10_000
    assert cert.radius >= 1.0
    assert cert.p_a_lower == pytest.approx(level ** (1 / cert.n_used))


def test_the_estimation_samples_are_the_first_ones_of_certify():
    """Same generator, same n0: the adaptive votes equal CERTIFY's over as many samples."""
    sigma = 0.5
    kwargs = {"num_classes": 2, "sigma": sigma, "n0": 30, "alpha": 0.01, "batch_size": 64}
    adaptive = build_certifier("adaptive", Threshold(), n=3000, radii=[0.0, 0.25, 0.5],
                               first_look=40, **kwargs)
    used = set()
    for idx, p_a in enumerate([0.55, 0.69, 0.8, 0.9, 0.999]):
        cert = adaptive.certify(pixel_for(p_a, sigma), adaptive.generator(4, idx))
        used.add(cert.n_used)
        cohen = build_certifier("cohen", Threshold(), n=cert.n_used, **kwargs)
        same = cohen.certify(pixel_for(p_a, sigma), cohen.generator(4, idx))
        assert same.n_a == cert.n_a
    assert len(used) > 2  # the images stopped at different looks


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
    assert (cert.prediction, cert.radius, cert.n_used) == (ABSTAIN, 0.0, 0)
    assert stopping.certify(pixel(0.3), stopping.generator(0, 0), label=2).prediction == 2
    default = build_certifier("adaptive", Constant(), **kwargs)
    cert = default.certify(pixel(0.3), default.generator(0, 0), label=1)
    assert cert.prediction == 2 and cert.n_used > 0


def test_predict_answers_a_clear_case_early_and_abstains_on_a_coin_flip():
    sigma = 0.25
    smooth = build_certifier("adaptive", Threshold(), 2, sigma, n0=1, n=1000, alpha=0.001,
                             radii=[0.0], batch_size=500)
    assert smooth.predict(pixel(0.5 - 3 * sigma), smooth.generator(1, 0)) == Prediction(0, 100)
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
    assert cohen["certify"]["radii"] is None
