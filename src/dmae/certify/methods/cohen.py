"""CERTIFY and PREDICT of Cohen, Rosenfeld & Kolter (2019), the paper's certification."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dmae.certify.base import (
    ABSTAIN,
    Ceiling,
    Certificate,
    CertificationMethod,
    Prediction,
    Sampler,
)

if TYPE_CHECKING:
    import torch



class Cohen(CertificationMethod):
    """CERTIFY and PREDICT with ``n0`` selection samples, ``n`` estimation samples and
    confidence level ``1 - alpha``."""

    name = "cohen"
    summary = "Cohen et al.'s CERTIFY, n estimation samples for every image"

    def certify(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator,
                label: int | None = None) -> Certificate:
        """n0 samples choose the class, n fresh samples lower-bound its probability.

        Returns the class and the L2 radius within which g is constant with probability
        >= 1 - alpha over the noise, or ABSTAIN with radius 0.0.
        """
        from dmae.certify.stats import certify_from_counts

        counts0 = certifier.sample_counts(x, self.n0, generator)
        counts = certifier.sample_counts(x, self.n, generator)
        c_hat, n_a = certifier.selected_votes(counts0, counts)
        certified, p_a_lower, radius = certify_from_counts(n_a, self.n, self.alpha,
                                                           certifier.sigma)
        if not certified:
            return Certificate(ABSTAIN, 0.0, n_a, p_a_lower, self.n)
        return Certificate(c_hat, float(radius), n_a, p_a_lower, self.n)

    def predict(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator
                ) -> Prediction:
        """The top class of n noisy samples, or ABSTAIN when a two-sided binomial test cannot
        tell it from the runner-up at level alpha."""
        from dmae.certify.stats import predict_pvalue

        counts = certifier.sample_counts(x, self.n, generator)
        top_class, n_top, n_second = certifier.top_two(counts)
        if predict_pvalue(n_top, n_second) > self.alpha:
            return Prediction(ABSTAIN, self.n)
        return Prediction(top_class, self.n)

    def ceiling(self, sigma: float) -> Ceiling:
        return Ceiling(self.n, self.alpha)

    def ceiling_text(self, largest_radius: Callable[[float], float]) -> str:
        n, alpha = self.n, float(self.alpha)
        return (
            f"With n = {n:,} samples at alpha = {alpha:g}, pA_lower is at most alpha^(1/n) = "
            f"{alpha ** (1.0 / n):.6f} (every sample votes for the top class), so no radius "
            f"above sigma * Phi^-1(alpha^(1/n)) = {largest_radius(1.0):.4f} sigma can be "
            "certified: certified accuracy at a larger radius is 0 by construction, whatever "
            "the classifier.")
