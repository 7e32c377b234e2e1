"""CERTIFY / PREDICT statistics against classifiers whose smoothed probabilities are known."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
from certify_fixtures import Constant, Threshold, pixel, pixel_for
from scipy.stats import binom, norm
from torch.utils._python_dispatch import TorchDispatchMode

from dmae.acceleration import resolve_precision, use_compile
from dmae.certify import (
    ABSTAIN,
    NoiseStream,
    Prediction,
    build_certifier,
    certify_from_counts,
    image_generator,
    image_seed,
    lower_confidence_bound,
    upper_confidence_bound,
)
from dmae.certify.methods.cohen import Cohen


def test_radius_ceiling_matches_the_paper():
    # pA = 1: the bound is alpha ** (1 / n); hyperparameters.md gives both ceilings.
    for n, ceiling in ((10_000, 3.1986), (100_000, 3.8115)):
        certified, lower, radius = certify_from_counts(n, n, 0.001, sigma=1.0)
        assert certified
        assert lower == pytest.approx(0.001 ** (1 / n), rel=1e-12)
        assert round(radius, 4) == ceiling


def test_constant_classifier_certify_end_to_end():
    sigma = 0.5
    smooth = build_certifier("cohen", Constant(), 3, sigma, n0=100, n=10_000, alpha=0.001,
                             batch_size=4096)
    cert = smooth.certify(pixel(0.3), smooth.generator(0, 0))
    assert cert.prediction == 2 and cert.n_a == 10_000
    assert round(cert.radius / sigma, 4) == 3.1986


def test_lower_bound_is_the_exact_clopper_pearson_quantile():
    n, alpha = 50, 0.05
    for n_a in range(1, n + 1):
        p = lower_confidence_bound(n_a, n, alpha)
        # Definition: the p at which observing n_a or more successes has probability alpha.
        assert binom.sf(n_a - 1, n, p) == pytest.approx(alpha, rel=1e-6)
    assert lower_confidence_bound(0, n, alpha) == 0.0
    assert np.array_equal(lower_confidence_bound(np.array([0, 3]), 10, 0.1),
                          [0.0, lower_confidence_bound(3, 10, 0.1)])


def test_upper_bound_is_the_exact_clopper_pearson_quantile():
    n, alpha = 50, 0.05
    for n_a in range(n):
        p = upper_confidence_bound(n_a, n, alpha)
        # the p at which observing n_a or fewer successes has probability alpha
        assert binom.cdf(n_a, n, p) == pytest.approx(alpha, rel=1e-6)
        assert p > lower_confidence_bound(n_a, n, alpha)
    assert upper_confidence_bound(n, n, alpha) == 1.0
    assert np.array_equal(upper_confidence_bound(np.array([3, 10]), 10, 0.1),
                          [upper_confidence_bound(3, 10, 0.1), 1.0])


def test_abstains_below_one_half():
    certified, lower, radius = certify_from_counts(55, 100, 0.001, sigma=0.25)
    assert not certified and lower < 0.5 and radius == 0.0


def _simulated_violations(p_a, n0, n, alpha, sigma, trials, rng, bound=None):
    """Full CERTIFY on binomial draws: selection, fresh counts, bound. Returns violation rate.

    A violation is a certificate for the wrong class, or a radius beyond the true radius.
    """
    count0 = rng.binomial(n0, p_a, size=trials)
    chose_top = count0 >= n0 - count0  # argmax ties go to class 0, the true top class
    n_a = rng.binomial(n, np.where(chose_top, p_a, 1 - p_a))
    if bound is None:
        certified, _, radius = certify_from_counts(n_a, n, alpha, sigma)
    else:  # a deliberately wrong bound, to show the test has power
        lower = bound(n_a, n)
        certified, radius = lower >= 0.5, sigma * norm.ppf(np.clip(lower, 0.5, 1 - 1e-12))
    true_radius = sigma * norm.ppf(p_a)
    violated = certified & (~chose_top | (radius > true_radius + 1e-12))
    return violated.mean()


@pytest.mark.parametrize("p_a", [0.6, 0.75, 0.9, 0.99])
def test_certified_radius_exceeds_true_radius_at_most_alpha(p_a):
    alpha, trials = 0.1, 40_000
    rng = np.random.default_rng(int(p_a * 1000))
    tolerance = 4 * math.sqrt(alpha * (1 - alpha) / trials)
    rate = _simulated_violations(p_a, 10, 100, alpha, 0.5, trials, rng)
    assert rate <= alpha + tolerance
    # The same test rejects the naive plug-in estimate pA_hat = nA / n.
    naive = _simulated_violations(p_a, 10, 100, alpha, 0.5, trials, rng,
                                  bound=lambda k, m: k / m)
    assert naive > alpha + tolerance


def test_real_certify_calls_respect_alpha_and_the_noise_level():
    sigma, p_a, alpha, n = 0.5, 0.8, 0.1, 100
    t = 0.5
    x = t - sigma * norm.ppf(p_a)  # so that P(noisy pixel < t) = p_a
    smooth = build_certifier("cohen", Threshold(t), 2, sigma, n0=10, n=n, alpha=alpha,
                             batch_size=64)
    true_radius = sigma * norm.ppf(p_a)
    trials, violations, total_a = 300, 0, 0
    for idx in range(trials):
        cert = smooth.certify(pixel(x), smooth.generator(7, idx))
        if cert.prediction == 1 or cert.radius > true_radius:
            violations += 1
        if cert.prediction != 1:  # n_a counts class 0 here (class 1 wins w.p. ~1e-3)
            total_a += cert.n_a
    assert violations / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    # Noise really has std sigma: the class-0 frequency matches Phi((t - x) / sigma).
    assert total_a / (trials * n) == pytest.approx(p_a, abs=0.012)


def test_predict_abstains_on_a_coin_flip_and_answers_a_clear_case():
    sigma = 0.25
    smooth = build_certifier("cohen", Threshold(0.5), 2, sigma, n0=1, n=1000, alpha=0.001,
                             batch_size=500)
    coin = [smooth.predict(pixel(0.5), smooth.generator(1, i)) for i in range(10)]
    assert coin == [Prediction(ABSTAIN, 1000)] * 10
    assert smooth.predict(pixel(0.5 - 3 * sigma), smooth.generator(1, 0)) == Prediction(0, 1000)
    assert smooth.predict(pixel(0.5 + 3 * sigma), smooth.generator(1, 0)) == Prediction(1, 1000)


def test_noise_stream_does_not_depend_on_how_it_is_split():
    def draw(sizes, chunk=8):
        stream = NoiseStream((2, 3), image_generator(3, 11), chunk)
        return torch.cat([stream.take(k) for k in sizes])

    whole = draw([95])
    for sizes in ([1] * 95, [5, 7, 32, 1, 50], [8, 8, 79], [94, 1]):
        assert torch.equal(draw(sizes), whole)


def test_counts_do_not_depend_on_batch_size():
    counts = []
    for batch_size in (1, 7, 100, 1000):
        smooth = build_certifier("cohen", Threshold(0.5), 2, 0.5, n0=10, n=300, alpha=0.01,
                                 batch_size=batch_size)
        counts.append(smooth.certify(pixel(0.4), smooth.generator(5, 42)))
    assert all(c == counts[0] for c in counts)


def test_image_seeds_are_distinct_and_deterministic():
    seeds = {image_seed(0, i) for i in range(50_000)}
    assert len(seeds) == 50_000
    assert image_seed(3, 17) == image_seed(3, 17) != image_seed(4, 17)


@pytest.mark.parametrize("kwargs, message", [
    ({"n0": 0, "n": 10, "alpha": 0.1}, "n0"),
    ({"n0": 10, "n": 5, "alpha": 0.1}, "n must be >= n0"),
    ({"n0": 1, "n": 5, "alpha": 0.0}, "alpha"),
    ({"n0": 1, "n": 5, "alpha": 1.0}, "alpha"),
])
def test_certifier_rejects_bad_sampling_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_certifier("cohen", Threshold(), 2, 0.5, **kwargs)


@pytest.mark.parametrize("sigma, batch_size, message", [
    (0.0, 10, "sigma"), (-0.5, 10, "sigma"), (0.5, 0, "batch_size")])
def test_certifier_rejects_bad_settings(sigma, batch_size, message):
    with pytest.raises(ValueError, match=message):
        build_certifier("cohen", Threshold(), 2, sigma, n0=1, n=5, alpha=0.1,
                        batch_size=batch_size)


def test_certifiers_are_built_by_method_name():
    settings = {"n0": 1, "n": 5, "alpha": 0.1}
    assert type(build_certifier("cohen", Threshold(), 2, 0.5, **settings).method) is Cohen
    with pytest.raises(ValueError, match="certify.method: unknown method 'sequential'; "
                                         "expected one of adaptive, cohen"):
        build_certifier("sequential", Threshold(), 2, 0.5, **settings)


# ---------------------------------------------------------------------------------------------
# Precision, compile and host transfers of the sampling loop
# ---------------------------------------------------------------------------------------------


def test_runtime_amp_and_compile_resolve_as_for_training():
    assert [resolve_precision(amp, "cpu") for amp in ("auto", "off", "fp32", "bf16")] == \
        ["fp32", "fp32", "fp32", "bf16"]
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="runtime.amp: 'tf32'"):
        resolve_precision("tf32", "cpu")
    assert [use_compile(c, "cpu") for c in ("auto", True, False)] == [False, True, False]
    assert use_compile("auto", "cuda") is True  # a device name; no GPU needed
    with pytest.raises(ValueError, match="runtime.compile"):
        use_compile("yes", "cpu")


class DtypeOf(torch.nn.Module):
    """A linear classifier that records the dtype its layer computed in."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.seen: set[torch.dtype] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(1))
        self.seen.add(out.dtype)
        return out


@pytest.mark.parametrize("amp, dtype", [("auto", torch.float32), ("off", torch.float32),
                                        ("bf16", torch.bfloat16)])
def test_the_classifier_runs_at_the_precision_asked_for(amp, dtype):
    model = DtypeOf()
    smooth = build_certifier("cohen", model, 2, 0.5, n0=4, n=16, alpha=0.1, batch_size=8,
                             amp=amp)
    smooth.certify(torch.rand(1, 2, 2), smooth.generator(0, 0))
    assert smooth.precision == {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    assert model.seen == {dtype}


def test_fp32_counts_are_the_plain_sampling_loop():
    """With amp auto or off on the CPU the votes are exactly those of the loop written out
    by hand (noise * sigma + x, model, argmax, bincount): no autocast, no other kernels."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).eval()
    x, sigma, n, batch, chunk = torch.rand(3, 2, 2), 0.5, 300, 64, 32
    stream = NoiseStream(tuple(x.shape), image_generator(2, 9), chunk)
    expected = torch.zeros(5, dtype=torch.long)
    with torch.inference_mode():
        for size in [batch] * (n // batch) + [n % batch]:
            votes = model(stream.take(size).mul_(sigma).add_(x)).argmax(dim=1)
            expected += torch.bincount(votes, minlength=5)
    for amp in ("auto", "off"):
        smooth = build_certifier("cohen", model, 5, sigma, n0=1, n=n, alpha=0.1,
                                 batch_size=batch, noise_chunk=chunk, amp=amp)
        assert torch.equal(smooth.sample_counts(x, n, image_generator(2, 9)), expected)


class OpLog(TorchDispatchMode):
    """Every ATen operator torch runs while the mode is active (a real trace, not a mock)."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


# Operators that make the host wait for a CUDA device: .item() / int(t) / a 0-dim index
# (_local_scalar_dense), and those whose output size depends on the data.
HOST_SYNCS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "bincount", "nonzero",
              "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive",
              "masked_select", "repeat_interleave", "histc", "one_hot"}


@pytest.mark.parametrize("call", ["certify", "predict"])
def test_the_sampling_loop_never_waits_for_the_device(call):
    """Many batches, and not one operator that reads a device value back: the counts stay
    on the device, and the one transfer per image is the final ``tolist``."""
    smooth = build_certifier("cohen", Threshold(0.5), 2, 0.5, n0=10, n=300, alpha=0.01,
                             batch_size=16)
    with OpLog() as log:
        getattr(smooth, call)(pixel(0.4), smooth.generator(5, 42))
    assert log.ops["argmax"] >= 300 // 16  # the trace did see every batch
    assert not HOST_SYNCS & set(log.ops), sorted(HOST_SYNCS & set(log.ops))


@pytest.mark.parametrize("method", ["cohen", "adaptive"])
def test_the_certified_class_is_the_class_predict_answers(method):
    """CERTIFY and PREDICT of one image, each with its own noise, name the same class (the
    top one) whenever both answer; on clear images both almost always do."""
    extra = {"radii": [0.0, 0.25, 0.5]} if method == "adaptive" else {}
    smooth = build_certifier(method, Threshold(), 2, 0.5, n0=20, n=400, alpha=0.001,
                             batch_size=256, **extra)
    answered = 0
    for idx, (p_a, top) in enumerate([(p, c) for p in (0.75, 0.9, 0.99) for c in (0, 1)] * 4):
        x = pixel_for(p_a if top == 0 else 1 - p_a, 0.5)  # pA of class 0 below t
        cert = smooth.certify(x, smooth.generator(1, idx))
        answer = smooth.predict(x, smooth.generator(2, idx))
        if ABSTAIN not in (cert.prediction, answer.prediction):
            assert cert.prediction == answer.prediction == top, (p_a, top)
            answered += 1
    assert answered >= 20
