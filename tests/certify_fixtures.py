"""Base classifiers whose smoothed probabilities are known exactly, for certification tests."""

from __future__ import annotations

import torch
from scipy.stats import norm


class Threshold(torch.nn.Module):
    """Class 0 when the (single) pixel value is below t, else class 1.

    With Gaussian noise of std sigma around pixel x, P(class 0) = Phi((t - x) / sigma) exactly,
    and the smoothed classifier's true robust radius is sigma * Phi^-1(pA) = |t - x|.
    """

    def __init__(self, t: float = 0.5):
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, 0]
        return torch.stack([self.t - z, z - self.t], dim=1)


class Constant(torch.nn.Module):
    """Always class 2 of 3 (pA = 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.0, 0.0, 1.0]).expand(x.shape[0], 3)


def pixel(value: float) -> torch.Tensor:
    return torch.full((1, 1, 1), value)


def pixel_for(p_a: float, sigma: float, t: float = 0.5) -> torch.Tensor:
    """The pixel at which ``Threshold(t)`` votes class 0 with probability ``p_a`` under noise
    of std sigma."""
    return pixel(t - sigma * float(norm.ppf(p_a)))
