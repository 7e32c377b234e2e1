"""What a certification method is (``CertificationMethod``) and what its CERTIFY and PREDICT
return.

A method is one module of ``dmae.certify.methods`` holding one ``CertificationMethod`` subclass:
its name (the value of ``certify.method``), its own settings of ``certify`` (JSON schema with
their defaults: the config schema's are generated from them), the checks of those settings, what
the report and ``dmae certify-image`` say about it, and its CERTIFY and PREDICT. It draws its
samples through a ``Sampler`` (``dmae.certify.certifier.Certifier`` runs the base classifier).

Every job imports every method module to validate its config, so a method module imports
no torch or scipy at its top: its ``certify`` and ``predict`` import the numerical modules
(``dmae.certify.stats``) they use, when they run.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from dmae.certify.checks import check_sampling

if TYPE_CHECKING:
    import torch

ABSTAIN = -1
MISMATCH = -2
"""The status of an image stopped right after selection because the selected class is not
its label (``stop_on_mismatch``): no certificate was attempted; it counts as misclassified."""


class Sampler(Protocol):
    """What a method draws its samples through: the base classifier under noise of std
    ``sigma`` (``dmae.certify.certifier.Certifier``)."""

    sigma: float

    def sample_counts(self, x: torch.Tensor, num: int, generator: torch.Generator
                      ) -> torch.Tensor: ...

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> Any: ...

    def count_from(self, stream: Any, x: torch.Tensor, num: int) -> torch.Tensor: ...

    def skip(self, stream: Any, num: int) -> None: ...

    def selected_votes(self, selection: torch.Tensor, counts: torch.Tensor
                       ) -> tuple[int, int]: ...

    def top_two(self, counts: torch.Tensor) -> tuple[int, int, int]: ...


@dataclass(frozen=True)
class Certificate:
    """Outcome of CERTIFY for one input: a class, or ABSTAIN (-1) with radius 0.0, or
    MISMATCH (-2, no certificate attempted) with radius 0.0.

    ``n_a`` of the ``n_used`` estimation samples voted for the selected class; ``p_a_lower``
    is the bound proven from them. ``n0_used`` is the number of selection samples drawn when
    the method stopped selecting before n0 (None: all n0).
    """

    prediction: int
    radius: float
    n_a: int
    p_a_lower: float
    n_used: int
    n0_used: int | None = None


@dataclass(frozen=True)
class Prediction:
    """Outcome of PREDICT for one input: a class or ABSTAIN, from ``n_used`` samples."""

    prediction: int
    n_used: int


@dataclass(frozen=True)
class Ceiling:
    """The bound a method proves for an image whose every sample votes for its class: a
    Clopper-Pearson bound of ``samples`` samples at level ``level``; no larger radius can be
    certified. ``note`` follows the sigma in the report's table of these ceilings."""

    samples: int
    level: float
    note: str = ""


class CertificationMethod(abc.ABC):
    """A certification method with its settings: n0 selection samples, at most n estimation
    samples, confidence level 1 - alpha, and the settings of its own (``settings``).

    Built from settings it checks (ValueError naming the ``certify`` key); a setting left out
    takes its schema default. Not bound to a noise level: CERTIFY and PREDICT read sigma from
    the certifier they sample with.
    """

    name: ClassVar[str]
    """The value of ``certify.method`` that chooses it (also names its certify-<name>/ folder)."""
    summary: ClassVar[str]
    """What it does, in a phrase: said of it in the schema's ``certify.method`` and, by
    default, in the report (``describe``)."""
    settings: ClassVar[dict[str, dict]] = {}
    """Its own keys of ``certify``, each a JSON schema with a ``default`` and a
    ``description``: the config schema's entries for them are generated from these."""
    derived: ClassVar[dict[str, str]] = {}
    """Own settings whose null stands for another config key's value, filled in when a
    config is validated (so that the certification jobs' settings hold the value)."""

    def __init__(self, *, n0: int, n: int, alpha: float, **settings):
        check_sampling(n0=n0, n=n, alpha=alpha)
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            raise ValueError(f"certify.{unknown[0]}: not a setting of certify.method "
                             f"{self.name} (its own: {', '.join(self.settings) or 'none'})")
        self.n0, self.n, self.alpha = n0, n, alpha
        self.options = {key: settings[key] if key in settings else copy.deepcopy(
            node.get("default")) for key, node in self.settings.items()}

    # ----------------------------------------------------------------------------- certifying

    @abc.abstractmethod
    def certify(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator,
                label: int | None = None) -> Certificate:
        """CERTIFY one image [C,H,W] (on the certifier's device): a class and an L2 radius,
        or ABSTAIN with radius 0.0.

        ``label`` (the true class, when known) is only for a method that may stop early on
        a misclassified image; the certificate itself never depends on it otherwise.
        """

    @abc.abstractmethod
    def predict(self, certifier: Sampler, x: torch.Tensor, generator: torch.Generator
                ) -> Prediction:
        """PREDICT one image [C,H,W]: a class, or ABSTAIN."""

    def parameters(self, sigma: float) -> dict:
        """Its name and the settings, beyond sigma, n0, n and alpha, that determine its
        certificates at ``sigma``: recorded with every certification it makes, and checked
        when one is resumed or merged."""
        return {"name": self.name, **self.options}

    # ------------------------------------------------------------------------ what it is called

    def describe(self) -> str:
        """The report's line on how the images were certified."""
        return (f"{self.name} ({self.summary}), n0 = {self.n0:,}, n = {self.n:,}, "
                f"alpha = {self.alpha:g}")

    def estimation_text(self, n_used: int) -> str:
        """How many estimation samples an image took, as `dmae certify-image` says it."""
        return f"{n_used} ({self.name})"

    @abc.abstractmethod
    def ceiling(self, sigma: float) -> Ceiling:
        """The bound of an image all of whose samples vote for its class, at ``sigma``."""

    @abc.abstractmethod
    def ceiling_text(self, largest_radius: Callable[[float], float]) -> str:
        """The report's paragraph on the largest radius it can certify;
        ``largest_radius(sigma)`` is the radius that ``ceiling(sigma)`` certifies."""
