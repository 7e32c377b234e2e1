"""Optimizer, parameter groups, the per-iteration learning-rate schedule (MAE recipe) and the
optimizer step."""

from __future__ import annotations

import fnmatch
import math
import re

import torch
from timm.optim import Lars

from dmae.train.hparams import TrainHParams

# Tokens and position embeddings are never decayed, even when the model does not list them.
_DEFAULT_NO_DECAY = ("cls_token", "mask_token", "reg_token", "dist_token", "pos_embed",
                     "decoder_pos_embed")
_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_STEM_RE = re.compile(r"(?:^|\.)(cls_token|reg_token|dist_token|pos_embed|patch_embed|norm_pre)"
                      r"(?:$|\.)")


def effective_batch(hp: TrainHParams, world_size: int = 1) -> int:
    """Images per optimizer step over all devices."""
    return hp.batch_size * hp.accum_iter * world_size


def peak_lr(hp: TrainHParams, world_size: int = 1) -> float:
    """``hp.lr`` if given, else the linear scaling rule blr * effective batch / 256."""
    if hp.lr is not None:
        return hp.lr
    return hp.blr * effective_batch(hp, world_size) / 256


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Linear warmup from 0 over ``warmup_steps`` iterations, then a half-cosine from ``peak`` that
    reaches ``min_lr`` at ``total_steps`` (MAE's ``adjust_learning_rate``, per iteration).
    """
    if step < warmup_steps:
        return peak * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr`` times its ``lr_scale`` (layer-wise decay)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, lr: float,
                   clip_grad: float | None, params: list[torch.Tensor]) -> None:
    """Set ``lr`` (times each group's ``lr_scale``), clip ``params``' gradients to norm
    ``clip_grad`` if given, step through ``scaler`` and clear the gradients."""
    set_lr(optimizer, lr)
    if clip_grad is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module under DDP (``.module``) and torch.compile (``._orig_mod``)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _matches(name: str, patterns: set[str]) -> bool:
    # Match the full name, a glob, or the last components (so wrapper prefixes do not matter).
    return any(name == p or fnmatch.fnmatchcase(name, p) or name.endswith("." + p)
               for p in patterns)


def no_weight_decay_names(model: torch.nn.Module) -> set[str]:
    """Names/patterns excluded from weight decay besides 1-D params and biases."""
    model = _unwrap(model)
    names = set(_DEFAULT_NO_DECAY)
    if hasattr(model, "no_weight_decay"):
        names |= set(model.no_weight_decay())
    return names


def num_vit_blocks(model: torch.nn.Module) -> int:
    """Number of transformer blocks, from parameter names ``[prefix.]blocks.<i>.``."""
    ids = {int(m.group(1)) for n, _ in _unwrap(model).named_parameters()
           if (m := _BLOCK_RE.search(n))}
    return max(ids) + 1 if ids else 0


def vit_layer_id(name: str, num_blocks: int) -> int:
    """MAE/BEiT layer id: embeddings 0, ``blocks.i`` i + 1, everything after (norm, head)
    ``num_blocks + 1``."""
    if m := _BLOCK_RE.search(name):
        return int(m.group(1)) + 1
    if _STEM_RE.search(name):
        return 0
    return num_blocks + 1


# Not timm's param_groups_layer_decay: it matches ours only for global_pool="avg". With "token"
# it gives the final ``norm`` the last block's lr scale, where MAE/BEiT give it the head's (1.0);
# its groups come in first-seen order, not sorted by (layer, decay), which reorders the gradient
# clipping sum and how a resume.pt's optimizer state maps onto parameters; and it carries
# neither ``param_names`` nor LARS's ``always_adapt``.
def build_param_groups(model: torch.nn.Module, hp: TrainHParams) -> list[dict]:
    """Optimizer parameter groups with weight decay and layer-wise lr scale.

    No weight decay on 1-D parameters (biases, norm weights), biases, tokens and position
    embeddings (``model.no_weight_decay()``). With ``hp.layer_decay`` each group's lr is scaled
    by ``layer_decay ** (num_blocks + 1 - layer_id)``: head 1, ``blocks.0``
    ``layer_decay ** num_blocks``, embeddings ``layer_decay ** (num_blocks + 1)``. Frozen
    parameters are left out. Every group carries ``param_names`` and ``lr_scale``.
    """
    model = _unwrap(model)
    no_decay = no_weight_decay_names(model)
    num_blocks = num_vit_blocks(model)
    if hp.layer_decay is not None and num_blocks == 0:
        raise ValueError("layer_decay: the model has no parameters named 'blocks.<i>.*'; "
                         "expected null for this model")
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = not (param.ndim <= 1 or name.endswith(".bias") or _matches(name, no_decay))
        layer = vit_layer_id(name, num_blocks) if hp.layer_decay is not None else 0
        scale = (hp.layer_decay ** (num_blocks + 1 - layer)
                 if hp.layer_decay is not None else 1.0)
        group = groups.setdefault((layer, decay), {
            "params": [], "param_names": [], "lr_scale": scale,
            "weight_decay": hp.weight_decay if decay else 0.0,
            # LARS adapts the lr of weight matrices only, as in MAE's LARS
            "always_adapt": decay,
        })
        group["params"].append(param)
        group["param_names"].append(name)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: torch.nn.Module, hp: TrainHParams) -> torch.optim.Optimizer:
    """AdamW (betas from ``hp``) or LARS (momentum ``hp.momentum``, trust coefficient 1e-3)."""
    groups = build_param_groups(model, hp)
    if hp.optimizer == "lars":
        return Lars(groups, lr=0.0, momentum=hp.momentum, trust_coeff=1e-3)
    for group in groups:
        group.pop("always_adapt")
    return torch.optim.AdamW(groups, lr=0.0, betas=hp.betas)
