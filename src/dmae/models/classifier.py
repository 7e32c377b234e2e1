"""Classifiers built on the DMAE encoder: fine-tuning (ViTClassifier) and linear probing.

:class:`ViTClassifier` IS a timm ``VisionTransformer`` (same parameter names), so the encoder
keys of a pretraining state dict (``patch_embed.*``, ``cls_token``, ``pos_embed``,
``blocks.*``, ``norm.*``) load into it by name. Inputs are [0, 1] pixels: the model resizes
(bicubic) and normalizes them itself. Noise for randomized smoothing is NOT added here; the
caller adds it to the [0, 1] batch before calling the model (noise, then resize, as the paper).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from dmae.checkpoint import CheckpointError, load_into
from dmae.models.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PixelNormalizer,
    check_choice,
    check_geometry,
    check_mean_std,
    norm_layer,
    resize_to,
)
from dmae.models.pos_embed import fill_sincos_

logger = logging.getLogger(__name__)

GLOBAL_POOLS = ("avg", "token")
# Keys of a pretraining state dict that belong to the encoder (everything else is decoder).
ENCODER_KEYS = ("cls_token", "pos_embed")
ENCODER_PREFIXES = ("patch_embed.", "blocks.", "norm.")
# What a classifier may legitimately lack / not use when given encoder weights.
_HEAD_PREFIXES = ("head.", "fc_norm.")


class ViTClassifier(VisionTransformer):
    """timm ViT that takes [0, 1] images; ``pos_embed`` starts from the sin-cos table.

    ``global_pool="avg"`` (paper default for fine-tuning): mean of patch tokens, then
    ``fc_norm`` (the encoder's final ``norm`` is absent). ``"token"``: class token after
    ``norm``. The head is initialised N(0, 2e-5) with zero bias, as MAE fine-tuning.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        global_pool: str = "avg",
        drop_path_rate: float = 0.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        check_geometry(img_size, patch_size, {"embed_dim": (embed_dim, num_heads)})
        check_mean_std(mean, std, in_chans)
        check_choice("global_pool", global_pool, GLOBAL_POOLS)
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans,
            num_classes=num_classes, global_pool=global_pool, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
            drop_path_rate=drop_path_rate, norm_layer=norm_layer,
        )
        self.normalizer = PixelNormalizer(mean, std)
        # Start from the pretraining encoder's sin-cos table; as in MAE fine-tuning it is
        # then trained (loading a pretrained encoder overwrites it with the same values).
        fill_sincos_(self.pos_embed, self.patch_embed.grid_size)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)

    def preprocess(self, imgs: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (any size) -> normalized images at the model's size."""
        return self.normalizer(resize_to(imgs, self.patch_embed.img_size))

    def forward(self, imgs: torch.Tensor, **kwargs) -> torch.Tensor:  # type: ignore[override]
        """[0, 1] images -> logits (timm's forward after resize + normalization)."""
        return super().forward(self.preprocess(imgs), **kwargs)


class LinearProbe(nn.Module):
    """Frozen encoder -> class token -> BatchNorm1d(affine=False, eps=1e-6) -> Linear.

    The paper's (MAE's) linear probing. ``encoder`` is a :class:`ViTClassifier` with
    ``global_pool="token"`` and no head; it stays frozen and in eval mode (so its drop-path
    is off) whatever ``train()`` is called with. ``head`` is ``Sequential(bn, linear)``
    (names ``head.0.*``, ``head.1.*`` as MAE); only ``head.1`` has trainable parameters.
    """

    def __init__(self, encoder: ViTClassifier, num_classes: int) -> None:
        super().__init__()
        if encoder.global_pool != "token" or not isinstance(encoder.head, nn.Identity):
            raise ValueError("encoder: expected a ViTClassifier with global_pool='token' and "
                             "num_classes=0")
        self.encoder = encoder
        self.encoder.requires_grad_(False)
        self.num_classes = num_classes
        linear = nn.Linear(encoder.embed_dim, num_classes)
        trunc_normal_(linear.weight, std=0.01)  # MAE linear-probe head init
        nn.init.zeros_(linear.bias)
        self.head = nn.Sequential(nn.BatchNorm1d(encoder.embed_dim, affine=False, eps=1e-6),
                                  linear)
        self.train()

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> class-token features after the encoder's final norm."""
        return self.encoder.forward_features(self.encoder.preprocess(imgs))[:, 0]

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(imgs))


def encoder_state_dict(pretrain_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only the encoder entries of a pretraining (MAE-layout) state dict."""
    return {k: v for k, v in pretrain_state.items()
            if k in ENCODER_KEYS or k.startswith(ENCODER_PREFIXES)}


def load_encoder(
    classifier: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    strict: bool = True,
    source: str = "pretrained encoder",
) -> tuple[list[str], list[str]]:
    """Load the encoder weights of ``state`` (decoder keys are dropped) into ``classifier``.

    Returns ``(missing, unexpected)``. Expected with ``global_pool="avg"``: missing
    ``head.*`` and ``fc_norm.*`` (new), unexpected ``norm.*`` (unused, as in MAE fine-tuning).
    With ``strict`` any other missing or unexpected key raises :class:`CheckpointError`; a
    shape mismatch always does. A :class:`LinearProbe` is accepted (its encoder is loaded).
    """
    target = classifier.encoder if isinstance(classifier, LinearProbe) else classifier
    encoder_state = encoder_state_dict(state)
    dropped = len(state) - len(encoder_state)
    missing, unexpected = load_into(target, encoder_state, strict=False, source=source)
    surprising = [k for k in missing if not k.startswith(_HEAD_PREFIXES)]
    surprising += [k for k in unexpected if not k.startswith("norm.")]
    if strict and surprising:
        raise CheckpointError(f"{source} does not fit {type(target).__name__}: unexpected "
                              f"missing/extra encoder keys: {', '.join(surprising)}")
    logger.info("loaded %d encoder tensors from %s (%d non-encoder keys dropped); "
                "missing: %s; unexpected: %s", len(encoder_state) - len(unexpected), source,
                dropped, missing or "none", unexpected or "none")
    return missing, unexpected
