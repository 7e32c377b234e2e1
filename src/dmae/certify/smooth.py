"""Gaussian randomized smoothing: CERTIFY and PREDICT of Cohen, Rosenfeld & Kolter (2019).

The smoothed classifier is g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), where f is any
``torch.nn.Module`` mapping a batch of [0,1] images [B,C,H,W] to logits [B,num_classes]. Noise is
added in [0,1] pixel space (the model normalizes internally) and is never clipped.

Noise is drawn from one ``torch.Generator`` per test image, in fixed-size chunks of
``noise_chunk`` samples, so the noise an image sees does not depend on the batch size (a single
``randn`` call of a different shape would give different numbers).

The base classifier runs at the precision ``runtime.amp`` resolves to (``resolve_precision``:
fp32 on the CPU, bf16 autocast on CUDA by default) and, with ``runtime.compile``, through
``torch.compile``. Noise is drawn on the device and votes are tallied there: a certificate
costs one device-to-host transfer, not one per batch.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm

from dmae.acceleration import PRECISIONS, autocast, resolve_precision, use_compile

ABSTAIN = -1
DEFAULT_NOISE_CHUNK = 32
_SEED_STRIDE = 1_000_003  # prime; distinct image indices give distinct seeds for a given seed
_SEED_MODULUS = 2**32  # the CPU generator (mt19937) only uses the low 32 bits of a seed


# ---------------------------------------------------------------------------------------------
# Statistics (pure functions, vectorized over numpy arrays so they can be tested in bulk)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------


def image_seed(seed: int, idx: int) -> int:
    """Seed of test image ``idx`` in a run seeded with ``seed``: deterministic, no ``hash()``.

    Results therefore do not depend on how the test set is split into jobs or shards.
    """
    if seed < 0 or idx < 0:
        raise ValueError(f"seed and image index must be >= 0, got seed={seed}, idx={idx}")
    return (seed * _SEED_STRIDE + idx) % _SEED_MODULUS


def image_generator(seed: int, idx: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded for test image ``idx``."""
    return torch.Generator(device=torch.device(device)).manual_seed(image_seed(seed, idx))


class NoiseStream:
    """Standard normal samples of one shape, drawn from ``generator`` in fixed-size chunks.

    ``take(k)`` returns the next k samples of the stream. Every chunk is one ``normal_`` call of
    ``chunk`` samples, so concatenating any sequence of ``take`` results gives the same numbers
    whatever the k's were: batch size changes speed, never the noise. At most ``chunk - 1``
    samples are carried over between calls, so memory stays bounded by batch + chunk.
    """

    def __init__(self, shape: tuple[int, ...], generator: torch.Generator, chunk: int,
                 dtype: torch.dtype = torch.float32):
        if chunk < 1:
            raise ValueError(f"noise chunk must be >= 1, got {chunk}")
        self.shape = tuple(shape)
        self.generator = generator
        self.device = generator.device
        self.chunk = chunk
        self.dtype = dtype
        self._carry: torch.Tensor | None = None

    def _new_chunk(self, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            out = torch.empty((self.chunk, *self.shape), dtype=self.dtype, device=self.device)
        return out.normal_(generator=self.generator)

    def take(self, k: int) -> torch.Tensor:
        """The next ``k`` samples, shape [k, *shape], on the generator's device."""
        out = torch.empty((k, *self.shape), dtype=self.dtype, device=self.device)
        filled = 0
        if self._carry is not None:
            used = min(k, len(self._carry))
            out[:used] = self._carry[:used]
            self._carry = self._carry[used:] if used < len(self._carry) else None
            filled = used
        while filled < k:
            if k - filled >= self.chunk:  # whole chunk: draw it in place, no copy
                self._new_chunk(out[filled:filled + self.chunk])
                filled += self.chunk
            else:
                chunk = self._new_chunk()
                used = k - filled
                out[filled:] = chunk[:used]
                self._carry = chunk[used:]
                filled = k
        return out


# ---------------------------------------------------------------------------------------------
# Certifiers: CERTIFY and PREDICT of a smoothed classifier, one class per ``certify.method``
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """Outcome of CERTIFY for one input: ``prediction`` is ABSTAIN (-1) with radius 0.0.

    ``n_a`` of the ``n_used`` estimation samples voted for the selected class; ``p_a_lower``
    is the bound proven from them.
    """

    prediction: int
    radius: float
    n_a: int
    p_a_lower: float
    n_used: int


@dataclass(frozen=True)
class Prediction:
    """Outcome of PREDICT for one input: a class or ABSTAIN, from ``n_used`` samples."""

    prediction: int
    n_used: int


class Votes(torch.nn.Module):
    """The base classifier's predicted class of every image of a batch: the part of the
    sampling loop ``torch.compile`` gets, so the argmax can fuse into the head."""

    def __init__(self, base_classifier: torch.nn.Module):
        super().__init__()
        self.base_classifier = base_classifier

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.base_classifier(batch).argmax(dim=1)


class Certifier(abc.ABC):
    """Smoothed classifier g around a base classifier f with Gaussian noise of std ``sigma``.

    A subclass implements CERTIFY and PREDICT with sampling settings it checks once, when
    built, and is registered in ``dmae.certify.methods.certifiers``. Noisy copies go through
    f ``batch_size`` at a time under ``torch.inference_mode`` and ``autocast`` at
    the precision ``amp`` resolves to (``self.precision``), through ``torch.compile`` when
    ``compile`` resolves to true (``self.compiled``); class counts are tallied on the device.
    The model is put in eval mode.
    """

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float, *,
                 batch_size: int = 1000, device: torch.device | str | None = None,
                 noise_chunk: int = DEFAULT_NOISE_CHUNK, amp: str = "auto",
                 compile: bool | str = False):
        check_positive_float("sigma", sigma)
        check_positive_int("batch_size", batch_size)
        check_positive_int("num_classes", num_classes)
        check_positive_int("noise_chunk", noise_chunk)
        if device is None:
            device = next(base_classifier.parameters(), torch.empty(0)).device
        self.device = torch.device(device)
        self.base_classifier = base_classifier.eval()
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self.batch_size = batch_size
        self.noise_chunk = noise_chunk
        self.precision = resolve_precision(amp, self.device)
        self.compiled = use_compile(compile, self.device)
        votes = Votes(self.base_classifier)
        # Compiled lazily, once per certifier: a second batch size (n0's, a last partial
        # batch) recompiles once into a dynamic-shape graph that serves every later size.
        self.votes = torch.compile(votes) if self.compiled else votes
        self._classes = torch.arange(num_classes, device=self.device)

    @abc.abstractmethod
    def certify(self, x: torch.Tensor, generator: torch.Generator,
                label: int | None = None) -> Certificate:
        """CERTIFY one image [C,H,W]: a class and an L2 radius, or ABSTAIN with radius 0.0.

        ``label`` (the true class, when known) is only for a method that may stop early on
        a misclassified image; the certificate itself never depends on it otherwise.
        """

    @abc.abstractmethod
    def predict(self, x: torch.Tensor, generator: torch.Generator) -> Prediction:
        """PREDICT one image [C,H,W]: a class, or ABSTAIN."""

    @abc.abstractmethod
    def parameters(self) -> dict:
        """The method's name and the settings, beyond sigma, n0, n and alpha, that determine
        its certificates (recorded with every certification it makes)."""

    def generator(self, seed: int, idx: int) -> torch.Generator:
        """The per-image generator on this classifier's device."""
        return image_generator(seed, idx, self.device)

    def sample_counts(self, x: torch.Tensor, num: int, generator: torch.Generator
                      ) -> torch.Tensor:
        """Class counts (a long tensor on the device) of f over ``num`` noisy copies of x.

        The noise is a fresh stream, so every call starts at a chunk boundary of ``generator``.
        """
        return self.count_from(self.noise(x, generator), x, num)

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> NoiseStream:
        """A fresh noise stream for images shaped like x, starting at a chunk boundary."""
        return NoiseStream(tuple(x.shape), generator, self.noise_chunk)

    def count_from(self, stream: NoiseStream, x: torch.Tensor, num: int) -> torch.Tensor:
        """Class counts of f over the next ``num`` samples of ``stream`` added to x."""
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        with torch.inference_mode(), autocast(self.device, PRECISIONS[self.precision]):
            remaining = num
            while remaining > 0:
                size = min(self.batch_size, remaining)
                batch = stream.take(size).mul_(self.sigma).add_(x)
                predictions = self.votes(batch)
                # Not bincount: on CUDA it reads the largest class back to size its output,
                # a host sync every batch. Comparing with every class costs B x C flags.
                counts += (predictions.unsqueeze(1) == self._classes).sum(dim=0)
                remaining -= size
        return counts

    def _prepare(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if generator.device.type != self.device.type or (
                self.device.index is not None and generator.device != self.device):
            raise ValueError(f"generator is on {generator.device} but the classifier runs on "
                             f"{self.device}; make it with the certifier's generator()")
        if x.dim() != 3:
            raise ValueError(f"expected one image [C,H,W], got shape {list(x.shape)}")
        return x.to(self.device, torch.float32)


class CohenCertifier(Certifier):
    """CERTIFY and PREDICT of Cohen et al. (2019) with ``n0`` selection samples, ``n``
    estimation samples and confidence level ``1 - alpha``."""

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float, *,
                 n0: int, n: int, alpha: float, **kwargs):
        super().__init__(base_classifier, num_classes, sigma, **kwargs)
        check_sampling(n0=n0, n=n, alpha=alpha)
        self.n0, self.n, self.alpha = n0, n, alpha

    def parameters(self) -> dict:
        return {"name": "cohen"}

    def certify(self, x: torch.Tensor, generator: torch.Generator,
                label: int | None = None) -> Certificate:
        """n0 samples choose the class, n fresh samples lower-bound its probability.

        Returns the class and the L2 radius within which g is constant with probability
        >= 1 - alpha over the noise, or ABSTAIN with radius 0.0.
        """
        x = self._prepare(x, generator)
        counts0 = self.sample_counts(x, self.n0, generator)
        counts = self.sample_counts(x, self.n, generator)
        c_hat = counts0.argmax(dim=0, keepdim=True)  # stays on the device: the only host
        # transfer is below (counts[c_hat] with a 0-dim index would read c_hat back first)
        c_hat, n_a = torch.cat([c_hat, counts.gather(0, c_hat)]).tolist()
        certified, p_a_lower, radius = certify_from_counts(n_a, self.n, self.alpha, self.sigma)
        if not certified:
            return Certificate(ABSTAIN, 0.0, n_a, p_a_lower, self.n)
        return Certificate(int(c_hat), float(radius), n_a, p_a_lower, self.n)

    def predict(self, x: torch.Tensor, generator: torch.Generator) -> Prediction:
        """The top class of n noisy samples, or ABSTAIN when a two-sided binomial test cannot
        tell it from the runner-up at level alpha."""
        x = self._prepare(x, generator)
        counts = self.sample_counts(x, self.n, generator)
        top_class, n_top, n_second = top_two(counts)
        if predict_pvalue(n_top, n_second) > self.alpha:
            return Prediction(ABSTAIN, self.n)
        return Prediction(top_class, self.n)


def top_two(counts: torch.Tensor) -> tuple[int, int, int]:
    """The most frequent class, its count and the runner-up's count (0 for one class)."""
    top2 = torch.topk(counts, k=min(2, len(counts)))
    values, classes = torch.stack([top2.values, top2.indices]).tolist()  # one transfer
    return int(classes[0]), values[0], values[1] if len(values) > 1 else 0


# ---------------------------------------------------------------------------------------------
# Argument checks, run once when a certifier is built
# ---------------------------------------------------------------------------------------------


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_positive_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_sampling(*, n0: int, n: int, alpha: float) -> None:
    """Raise ValueError for n0 < 1, n < n0 or alpha outside (0, 1)."""
    check_positive_int("n0", n0)
    check_positive_int("n", n)
    if n < n0:
        raise ValueError(f"n must be >= n0, got n={n}, n0={n0}")
    check_probability("alpha", alpha)


def check_probability(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
