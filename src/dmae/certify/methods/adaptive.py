"""Adaptive CERTIFY: estimation samples drawn in rounds, each image stopped as soon as its
answer on a radius grid is settled.

A table cell only asks whether an image is certified at radius r, for a handful of radii, and
most images settle that after a few hundred samples (Horváth et al., ICLR 2022, and Chen et
al.'s input-specific sampling, 2021, study such adaptive sample sizes).
``dmae.certify.sequential.SequentialPlan`` is the sequential test and why the certificate
keeps its level alpha; ``Adaptive`` runs it on a base classifier.
"""

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
from dmae.certify.checks import check_above, check_positive_int, check_radii

if TYPE_CHECKING:
    import torch

    from dmae.certify.sequential import SequentialPlan


class Adaptive(CertificationMethod):
    """CERTIFY with Cohen et al.'s ``n0`` selection samples, then estimation samples drawn by a
    ``SequentialPlan`` (at most ``n_max``, default ``n``) until the answer on ``radii`` is
    settled. The estimation samples are the first ones of CERTIFY's own stream, so an image
    that runs to n_max = n gets exactly CERTIFY's counts (with the bound at level alpha / 2).

    ``stop_on_mismatch``: stop right after selection when the selected class is not the
    label, as the authors' certification code does; for certified-accuracy runs only (such an
    image can never count as certified), and recorded as ABSTAIN with no estimation samples.

    PREDICT draws up to n_max samples at the same looks and answers at the first look where
    the two-sided binomial test separates the top two classes at that look's level (the union
    bound again keeps the chance of a wrong answer below alpha); ABSTAIN if none does.
    """

    name = "adaptive"
    summary = "stops each image once its answer on the radius grid is settled"
    settings = {
        "n_max": {"type": ["integer", "null"], "minimum": 1, "default": None,
                  "description": "the most estimation samples an image may take (null: n)"},
        "radii": {"type": ["array", "null"], "items": {"type": "number", "minimum": 0},
                  "minItems": 1, "default": None,
                  "description": "the radius grid it settles, increasing (null: report.radii)"},
        "first_look": {"type": "integer", "minimum": 1, "default": 100,
                       "description": "estimation samples at the first look"},
        "growth": {"type": "number", "exclusiveMinimum": 1, "default": 2,
                   "description": "each look draws this factor more samples than the last"},
        "stop_on_mismatch": {
            "type": "boolean", "default": False,
            "description": "stop after selection when the selected class is not the label "
                           "(such an image is never certified correct; for certified-accuracy "
                           "runs only)"},
    }
    derived = {"radii": "report.radii"}

    def __init__(self, **settings):
        super().__init__(**settings)
        n_max, self.radii = self.options["n_max"], check_radii(self.options["radii"])
        self.n_max = self.n if n_max is None else n_max
        check_positive_int("certify.n_max", self.n_max)
        if self.n_max < self.n0:
            raise ValueError(f"certify.n_max must be >= certify.n0, got n_max={self.n_max}, "
                             f"n0={self.n0}")
        check_positive_int("certify.first_look", self.options["first_look"])
        check_above("certify.growth", self.options["growth"], 1)
        self.stop_on_mismatch = self.options["stop_on_mismatch"]
        if not isinstance(self.stop_on_mismatch, bool):
            raise ValueError(f"certify.stop_on_mismatch must be true or false, "
                             f"got {self.stop_on_mismatch!r}")
        self.plans: dict[float, SequentialPlan] = {}  # by sigma, built when first needed

    def plan(self, sigma: float) -> SequentialPlan:
        """The sequential plan at ``sigma``: its looks, levels and stopping rule."""
        if sigma not in self.plans:
            from dmae.certify.sequential import SequentialPlan

            self.plans[sigma] = SequentialPlan(
                sigma=sigma, alpha=self.alpha, n_max=self.n_max, radii=self.radii,
                first_look=self.options["first_look"], growth=self.options["growth"])
        return self.plans[sigma]

    def parameters(self, sigma: float) -> dict:
        return {"name": self.name, **self.plan(sigma).parameters(),
                "stop_on_mismatch": self.stop_on_mismatch}

    def certify(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator,
                label: int | None = None) -> Certificate:
        from dmae.certify.stats import radius_from_bound

        plan = self.plan(certifier.sigma)
        c_hat = int(certifier.sample_counts(x, self.n0, generator).argmax())
        if self.stop_on_mismatch and label is not None and c_hat != int(label):
            return Certificate(ABSTAIN, 0.0, 0, 0.0, 0)
        stream = certifier.noise(x, generator)
        votes, drawn = plan.run(lambda k: certifier.count_from(stream, x, k)[c_hat].item())
        p_a_lower = plan.bound(votes, drawn)
        if p_a_lower < 0.5:
            return Certificate(ABSTAIN, 0.0, votes, p_a_lower, drawn)
        return Certificate(c_hat, float(radius_from_bound(p_a_lower, certifier.sigma)), votes,
                           p_a_lower, drawn)

    def predict(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator
                ) -> Prediction:
        from dmae.certify.stats import predict_pvalue

        plan = self.plan(certifier.sigma)
        stream = certifier.noise(x, generator)
        counts, drawn = None, 0
        for m, level in zip(plan.looks, plan.levels, strict=True):
            more = certifier.count_from(stream, x, m - drawn)
            counts = more if counts is None else counts + more
            drawn = m
            top_class, n_top, n_second = certifier.top_two(counts)
            if predict_pvalue(n_top, n_second) <= level:
                return Prediction(top_class, drawn)
        return Prediction(ABSTAIN, drawn)

    # ------------------------------------------------------------------------ what it is called

    def describe(self) -> str:
        grid = ", ".join(f"{r:g}" for r in self.radii)
        mismatch = "; stops on a misclassified selection" if self.stop_on_mismatch else ""
        return (f"{self.name} (estimation samples in rounds, each image stopped once its "
                f"answer at radii {grid} is settled; at most n_max = {self.n_max:,}{mismatch}), "
                f"n0 = {self.n0:,}, alpha = {self.alpha:g}")

    def estimation_text(self, n_used: int) -> str:
        note = ", stopped after selection: the selected class is not the label" \
            if n_used == 0 else ""
        return f"{n_used} of at most {self.n_max} ({self.name}{note})"

    def ceiling(self, sigma: float) -> Ceiling:
        plan = self.plan(sigma)
        return Ceiling(self.n_max, plan.levels[-1], f" (K = {len(plan.looks)} looks)")

    def ceiling_text(self, largest_radius: Callable[[float], float]) -> str:
        return (
            f"The adaptive method splits alpha over its K looks (per sigma below; half of it "
            f"at the last one, n_max = {self.n_max:,} samples, when there are several), so "
            "pA_lower is at most a^(1/n_max), a the last look's level, and no radius above "
            "sigma * Phi^-1 of that can be certified: certified accuracy at a larger radius is "
            "0 by construction. ACR is not comparable between certification methods: the "
            "adaptive method stops as soon as an image's answer on its radius grid is "
            "settled, so its radii are smaller by design even where the grid answer is the "
            "same.")
