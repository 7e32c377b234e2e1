"""The certification methods a config can choose with ``certify.method``.

Reading a config's method and settings (the report does) loads no torch: the classes are
imported when a certifier is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmae.config import schema

if TYPE_CHECKING:
    import torch

    from dmae.certify.smooth import Certifier

_CERTIFY = schema()["properties"]["certify"]["properties"]
# The config schema's default for certify.method, for callers without a config.
DEFAULT_METHOD = _CERTIFY["method"]["default"]
# The settings of certify (beyond n0, n, alpha) each method takes: the schema marks each
# with x-method.
METHOD_KEYS = {method: tuple(key for key, node in _CERTIFY.items()
                             if node.get("x-method") == method)
               for method in _CERTIFY["method"]["enum"]}


def certifiers() -> dict[str, type[Certifier]]:
    """certify.method -> the class that certifies with it."""
    from dmae.certify.adaptive import AdaptiveCertifier
    from dmae.certify.smooth import CohenCertifier

    return {"cohen": CohenCertifier, "adaptive": AdaptiveCertifier}


def build_certifier(method: str, base_classifier: torch.nn.Module, num_classes: int,
                    sigma: float, **settings) -> Certifier:
    """The certifier of ``method`` (config ``certify.method``), its settings checked."""
    known = certifiers()
    if method not in known:
        raise ValueError(f"certify.method: unknown method {method!r}; expected one of "
                         f"{', '.join(sorted(known))}")
    return known[method](base_classifier, num_classes, sigma, **settings)


def method_settings(cfg: dict) -> tuple[str, dict]:
    """A (validated) config's certification method and the sampling settings it takes:
    n0, n, alpha and the method's own keys of ``certify``."""
    c = cfg["certify"]
    keys = ("n0", "n", "alpha", *METHOD_KEYS[c["method"]])
    return c["method"], {key: c[key] for key in keys}
