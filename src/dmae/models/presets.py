"""Named architectures and builders that take a plain config dict.

A config names a preset with ``arch``; any other key overrides that preset's value::

    {"arch": "vit_base_patch16", "img_size": 224, "in_chans": 3, "mean": [...], "std": [...],
     "sigma": 0.25, "mask_ratio": 0.75, "norm_pix_loss": True, "loss_on": "all",
     "global_pool": "avg", "drop_path_rate": 0.1}

The pretraining model also needs the keys of a pretraining recipe (``PRETRAINING_KEYS``),
which have no default here: a config's ``pretrainings.<name>`` gives them
(``dmae.config.pretrain_settings``), with the defaults of the config schema.

One dict can serve both builders: pretraining-only keys are ignored by the classifier
builders and vice versa, but every key is validated and unknown keys are rejected.
"""

from __future__ import annotations

import math
from typing import Any

from dmae.models.classifier import LinearProbe, ViTClassifier
from dmae.models.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_choice,
)
from dmae.models.dmae import DMAEPretrainModel

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)

_IMAGENET = {"img_size": 224, "in_chans": 3, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
_FMNIST = {"img_size": 28, "in_chans": 1, "mean": FMNIST_MEAN, "std": FMNIST_STD}

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's models (MAE's ViT-B/16 and ViT-L/16, decoder 512-d x 8 blocks, 16 heads).
    "vit_base_patch16": {**_IMAGENET, "patch_size": 16, "embed_dim": 768, "depth": 12,
                         "num_heads": 12, "mlp_ratio": 4.0, "decoder_embed_dim": 512,
                         "decoder_depth": 8, "decoder_num_heads": 16},
    "vit_large_patch16": {**_IMAGENET, "patch_size": 16, "embed_dim": 1024, "depth": 24,
                          "num_heads": 16, "mlp_ratio": 4.0, "decoder_embed_dim": 512,
                          "decoder_depth": 8, "decoder_num_heads": 16},
    # A small ViT for 28x28 Fashion-MNIST that trains in seconds per epoch on a 2-core CPU.
    "vit_small_fmnist": {**_FMNIST, "patch_size": 7, "embed_dim": 64, "depth": 4,
                         "num_heads": 2, "mlp_ratio": 2.0, "decoder_embed_dim": 64,
                         "decoder_depth": 1, "decoder_num_heads": 2},
    # Tiny, for tests.
    "vit_micro": {**_FMNIST, "patch_size": 7, "embed_dim": 32, "depth": 2, "num_heads": 2,
                  "mlp_ratio": 2.0, "decoder_embed_dim": 32, "decoder_depth": 1,
                  "decoder_num_heads": 2},
}

# The noise, masking and loss of a pretraining recipe: DMAEPretrainModel's other arguments.
PRETRAINING_KEYS = ("sigma", "mask_ratio", "loss_on", "norm_pix_loss")
# The other keys beyond the architecture, with their defaults (the config schema has none).
_RUN_DEFAULTS: dict[str, Any] = {
    "global_pool": "avg", "drop_path_rate": 0.0,
    # Only read by dmae.models.convert: what kind of checkpoint a file holds.
    "kind": "pretrain", "num_classes": None,
}
_ARCH_KEYS = tuple(PRESETS["vit_base_patch16"])
KNOWN_KEYS = ("arch", *_ARCH_KEYS, *PRETRAINING_KEYS, *_RUN_DEFAULTS)
KINDS = ("pretrain", "classifier")

_ENCODER_ARGS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                 "mlp_ratio", "mean", "std")
_DECODER_ARGS = ("decoder_embed_dim", "decoder_depth", "decoder_num_heads")


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Merge ``cfg`` over its ``arch`` preset and the defaults; validate every value.

    Raises ValueError naming the offending key and what was expected.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f"model config: expected a dict, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(KNOWN_KEYS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown model config key (unknown: {unknown}); "
                         f"expected keys among {list(KNOWN_KEYS)}")
    arch = cfg.get("arch")
    if arch not in PRESETS:
        raise ValueError(f"arch: expected one of {sorted(PRESETS)}, got {arch!r}")
    out = {"arch": arch, **PRESETS[arch], **_RUN_DEFAULTS}
    out.update({k: v for k, v in cfg.items() if k != "arch"})
    out["mean"], out["std"] = _as_list("mean", out["mean"]), _as_list("std", out["std"])
    _validate(out)
    return out


def _as_list(key: str, value: Any) -> list:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{key}: expected a list of numbers (one per channel), got {value!r}")
    return list(value)


def _validate(c: dict[str, Any]) -> None:
    # Only what no model constructor checks: DMAEPretrainModel and ViTClassifier check the
    # geometry, mean/std, noise, masking, loss and pooling they are built with.
    for key in ("in_chans", "depth", "decoder_depth"):
        _positive_int(key, c[key])
    if not _number(c["mlp_ratio"]) or not c["mlp_ratio"] > 0:
        raise ValueError(f"mlp_ratio: expected a positive number, got {c['mlp_ratio']!r}")
    if not _number(c["drop_path_rate"]) or not 0 <= c["drop_path_rate"] < 1:
        raise ValueError(f"drop_path_rate: expected a number in [0, 1), "
                         f"got {c['drop_path_rate']!r}")
    check_choice("kind", c["kind"], KINDS)
    if c["num_classes"] is not None:
        _positive_int("num_classes", c["num_classes"])


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key}: expected a positive integer, got {value!r}")


def build_pretrain_model(cfg: dict[str, Any]) -> DMAEPretrainModel:
    """Build a :class:`DMAEPretrainModel` from a config dict that has every key of
    ``PRETRAINING_KEYS`` (see module docstring)."""
    c = resolve_config(cfg)
    missing = [key for key in PRETRAINING_KEYS if key not in c]
    if missing:
        raise ValueError(f"{missing[0]}: missing from the model config; the pretraining model "
                         f"needs {', '.join(PRETRAINING_KEYS)} (a config's pretrainings.<name>)")
    return DMAEPretrainModel(**{k: c[k] for k in _ENCODER_ARGS + _DECODER_ARGS},
                             **{k: c[k] for k in PRETRAINING_KEYS})


def build_classifier(cfg: dict[str, Any], num_classes: int) -> ViTClassifier:
    """Build a fine-tuning :class:`ViTClassifier` (``global_pool``, ``drop_path_rate``)."""
    c = _resolve_with_classes(cfg, num_classes)
    return ViTClassifier(**{k: c[k] for k in _ENCODER_ARGS}, num_classes=num_classes,
                         global_pool=c["global_pool"], drop_path_rate=c["drop_path_rate"])


def build_linear_probe(cfg: dict[str, Any], num_classes: int) -> LinearProbe:
    """Build a :class:`LinearProbe` (class token, no drop path; ``global_pool`` ignored)."""
    c = _resolve_with_classes(cfg, num_classes)
    encoder = ViTClassifier(**{k: c[k] for k in _ENCODER_ARGS}, num_classes=0,
                            global_pool="token")
    return LinearProbe(encoder, num_classes)


def _resolve_with_classes(cfg: dict[str, Any], num_classes: int) -> dict[str, Any]:
    c = resolve_config(cfg)
    _positive_int("num_classes", num_classes)
    if c["num_classes"] is not None and c["num_classes"] != num_classes:
        raise ValueError(f"num_classes: config says {c['num_classes']}, "
                         f"caller asked for {num_classes}")
    return c


def build_downstream(cfg: dict[str, Any], num_classes: int, task: str = "finetune"):
    """The classifier a fine-tuning ``task`` trains: a linear probe, or the whole ViT."""
    return (build_linear_probe if task == "linprobe" else build_classifier)(cfg, num_classes)
