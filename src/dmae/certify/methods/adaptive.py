"""Adaptive CERTIFY: selection and estimation samples drawn in looks, each image stopped as
soon as its answer on a radius grid is settled.

A table cell only asks whether an image is certified at radius r, for a handful of radii, and
most images settle that after a few hundred samples (Horvath et al., ICLR 2022, and Chen et
al., AAAI 2022, study such adaptive sample sizes). ``dmae.certify.sequential.SequentialPlan``
is the sequential test and why the certificate keeps its level alpha; ``Adaptive`` runs it on
a base classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dmae.certify.base import (
    ABSTAIN,
    MISMATCH,
    Ceiling,
    Certificate,
    CertificationMethod,
    Prediction,
    Sampler,
)
from dmae.certify.checks import (
    check_above,
    check_positive_int,
    check_probability,
    check_radii,
)

if TYPE_CHECKING:
    import torch

    from dmae.certify.sequential import SequentialPlan


class Adaptive(CertificationMethod):
    """CERTIFY with Cohen et al.'s ``n0`` selection samples (stopped at ``selection_look``
    when those are unanimous), then estimation samples drawn by a ``SequentialPlan`` (at most
    ``n_max``, default ``n``) until the answer on ``radii`` is settled. The selection draws
    its noise in full even when it stops early, so the estimation samples are the first ones
    of CERTIFY's own stream: an image that runs to n_max = n sees exactly CERTIFY's votes.
    A certificate's radius is the largest grid radius proven, its pA_lower that radius's
    threshold Phi(r / sigma) (1/2 for radius 0; 0.0 when none is proven).

    ``stop_on_mismatch``: stop right after selection when the selected class is not the
    label, as the authors' certification code does; for certified-accuracy runs only (such an
    image can never count as certified), recorded with the status MISMATCH.

    PREDICT draws up to n_max samples at doubling looks and answers at the first look where
    the two-sided binomial test separates the top two classes at that look's level (the union
    bound keeps the chance of a wrong answer below alpha); ABSTAIN if none does.
    """

    name = "adaptive"
    summary = "stops each image once its answer on the radius grid is settled"
    settings = {
        "n_max": {"type": ["integer", "null"], "minimum": 1, "default": None,
                  "description": "the most estimation samples an image may take (null: n)"},
        "radii": {"type": ["array", "null"], "items": {"type": "number", "minimum": 0},
                  "minItems": 1, "default": None,
                  "description": "the radius grid it settles, increasing (null: report.radii)"},
        "first_look": {"type": "integer", "minimum": 1, "default": 10,
                       "description": "estimation samples at the first look"},
        "growth": {"type": "number", "exclusiveMinimum": 1, "default": 1.2,
                   "description": "each look draws this factor more samples than the last"},
        "futility": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                     "default": 0.05,
                     "description": "level of the futility test, which only decides when to "
                                    "stop: the chance that an image whose pA makes CERTIFY's "
                                    "test at a threshold a coin flip is stopped short of it"},
        "selection_look": {
            "type": ["integer", "null"], "minimum": 1, "default": 10,
            "description": "selection stops after this many samples when they all vote for "
                           "one class (null: always n0)"},
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
        check_probability("certify.futility", self.options["futility"])
        self.selection_look = self.options["selection_look"]
        if self.selection_look is not None:
            check_positive_int("certify.selection_look", self.selection_look)
        self.stop_on_mismatch = self.options["stop_on_mismatch"]
        if not isinstance(self.stop_on_mismatch, bool):
            raise ValueError(f"certify.stop_on_mismatch must be true or false, "
                             f"got {self.stop_on_mismatch!r}")
        self.plans: dict[float, SequentialPlan] = {}  # by sigma, built when first needed

    def plan(self, sigma: float) -> SequentialPlan:
        """The sequential plan at ``sigma``: its looks, boundaries and stopping rule."""
        if sigma not in self.plans:
            from dmae.certify.sequential import SequentialPlan

            self.plans[sigma] = SequentialPlan(
                sigma=sigma, alpha=self.alpha, n_max=self.n_max, radii=self.radii,
                first_look=self.options["first_look"], growth=self.options["growth"],
                futility=self.options["futility"])
        return self.plans[sigma]

    def parameters(self, sigma: float) -> dict:
        return {"name": self.name, **self.plan(sigma).parameters(),
                "selection_look": self.selection_look,
                "stop_on_mismatch": self.stop_on_mismatch}

    def select(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator
               ) -> tuple[torch.Tensor, int]:
        """The selection counts and the samples drawn: ``selection_look`` of them when they
        are unanimous, else n0. Which class is selected does not enter the guarantee, only
        that the estimation samples are drawn apart from these."""
        look = self.selection_look
        if look is None or look >= self.n0:
            return certifier.sample_counts(x, self.n0, generator), self.n0
        stream = certifier.noise(x, generator)
        counts = certifier.count_from(stream, x, look)
        if int(counts.max()) == look:
            certifier.skip(stream, self.n0 - look)
            return counts, look
        return counts + certifier.count_from(stream, x, self.n0 - look), self.n0

    def certify(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator,
                label: int | None = None) -> Certificate:
        plan = self.plan(certifier.sigma)
        selection, n0_used = self.select(certifier, x, generator)
        c_hat = int(selection.argmax())
        if self.stop_on_mismatch and label is not None and c_hat != int(label):
            return Certificate(MISMATCH, 0.0, 0, 0.0, 0, n0_used)
        stream = certifier.noise(x, generator)
        votes, drawn, proven = plan.run(
            lambda k: certifier.count_from(stream, x, k)[c_hat].item())
        if proven < 0:
            return Certificate(ABSTAIN, 0.0, votes, 0.0, drawn, n0_used)
        p_a_lower, radius = plan.certified(proven)
        return Certificate(c_hat, radius, votes, p_a_lower, drawn, n0_used)

    def predict(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator
                ) -> Prediction:
        from dmae.certify.stats import predict_pvalue

        looks, levels = self.plan(certifier.sigma).predict_looks()
        stream = certifier.noise(x, generator)
        counts, drawn = None, 0
        for m, level in zip(looks, levels, strict=True):
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
        return Ceiling(self.n_max, self.alpha,
                       f" (K = {len(plan.looks)} looks; grid radii up to "
                       f"{plan.grid_radii[-1]:g})")

    def ceiling_text(self, largest_radius: Callable[[float], float]) -> str:
        return (
            f"The adaptive method certifies the radii of its grid only, each by a sequential "
            f"test at level alpha; the largest it can reach at a sigma (below) is at most "
            f"CERTIFY's ceiling with n_max = {self.n_max:,} samples, sigma * "
            f"Phi^-1(alpha^(1/n_max)), shown: certified accuracy at a larger radius is 0 by "
            "construction. ACR is not comparable between certification methods: the "
            "adaptive method reports the grid radius it proved, so its radii are smaller by "
            "design even where the grid answer is the same.")
