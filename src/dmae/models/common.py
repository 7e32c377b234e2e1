"""Pieces shared by the pretraining model and the classifiers: noise, resizing, normalization.

Every model in this package takes images in [0, 1] pixel units. Gaussian noise (when a model
adds it) goes on those pixels, then the image is resized to the model's size, then normalized
with the mean/std the model was built with; this order is the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# LayerNorm eps 1e-6 everywhere, as in MAE / DMAE.
norm_layer = partial(nn.LayerNorm, eps=1e-6)


def add_gaussian_noise(
    imgs: torch.Tensor, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Return ``imgs + sigma * N(0, I)`` in pixel units, never clipped; sigma 0 returns ``imgs``."""
    if sigma == 0:
        return imgs
    noise = torch.randn(imgs.shape, generator=generator, device=imgs.device, dtype=imgs.dtype)
    return imgs + sigma * noise


def resize_to(imgs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``[B, C, H, W]`` to ``size`` (no-op when it already matches)."""
    if tuple(imgs.shape[-2:]) == tuple(size):
        return imgs
    return F.interpolate(imgs, size=size, mode="bicubic", align_corners=False)


class PixelNormalizer(nn.Module):
    """Mean/std normalization with non-persistent buffers (kept out of every state dict)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return (imgs - self.mean) / self.std

    def inverse(self, imgs: torch.Tensor) -> torch.Tensor:
        return imgs * self.std + self.mean


def check_mean_std(mean: Sequence[float], std: Sequence[float], in_chans: int) -> None:
    """Raise ValueError unless mean/std are ``in_chans`` numbers each, std all positive."""
    for key, values in (("mean", mean), ("std", std)):
        if (not isinstance(values, Sequence) or len(values) != in_chans
                or not all(_is_number(v) for v in values)):
            raise ValueError(f"{key}: expected a list of {in_chans} numbers (one per channel), "
                             f"got {values!r}")
    if not all(s > 0 for s in std):
        raise ValueError(f"std: expected positive values, got {list(std)!r}")


def check_sigma(sigma: float) -> None:
    if not _is_number(sigma) or not sigma >= 0 or sigma == float("inf"):
        raise ValueError(f"sigma: expected a finite number >= 0 (pixel units), got {sigma!r}")


def check_mask_ratio(mask_ratio: float) -> None:
    if not _is_number(mask_ratio) or not 0 <= mask_ratio < 1:
        raise ValueError(f"mask_ratio: expected a number in [0, 1), got {mask_ratio!r}")


def check_choice(key: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{key}: expected one of {list(choices)}, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_geometry(img_size: int, patch_size: int, dims: dict[str, tuple[int, int]]) -> None:
    """Check the image tiles into patches and each width fits its heads and the 2-D sin-cos.

    ``dims`` maps a width key to ``(width, heads)``, e.g. ``{"embed_dim": (768, 12)}``; the
    heads key is named after the width key (``embed_dim`` -> ``num_heads``,
    ``decoder_embed_dim`` -> ``decoder_num_heads``).
    """
    for key, value in (("img_size", img_size), ("patch_size", patch_size)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{key}: expected a positive integer, got {value!r}")
    if img_size % patch_size:
        raise ValueError(f"img_size: expected a multiple of patch_size {patch_size}, "
                         f"got {img_size}")
    for key, (width, heads) in dims.items():
        heads_key = key.replace("embed_dim", "num_heads")
        if not _is_int(width) or width < 4 or width % 4:
            raise ValueError(f"{key}: expected a positive multiple of 4 (2-D sin-cos position "
                             f"embedding), got {width!r}")
        if not _is_int(heads) or heads < 1 or width % heads:
            raise ValueError(f"{heads_key}: expected a positive divisor of {key} {width}, "
                             f"got {heads!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
