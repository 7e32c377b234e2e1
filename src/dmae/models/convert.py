"""Import the authors' PyTorch checkpoints (.pth) into this project's safetensors format.

The published DMAE-Base/Large files are bare state dicts in the MAE key layout. They are read
with ``torch.load(weights_only=True)``, so no arbitrary Python object is ever unpickled (a file
that needs that, e.g. one with an argparse ``args`` entry, is refused with an explanation).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from dmae.checkpoint import CheckpointError, load_into, save_checkpoint
from dmae.io import sha256_file
from dmae.models.presets import build_classifier, build_pretrain_model, resolve_config

logger = logging.getLogger(__name__)


def read_torch_state_dict(src: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a .pth state dict safely; return it and notes on how it was unwrapped.

    Accepts a bare ``{name: tensor}`` dict or one under a ``"model"`` key, and strips a
    ``module.`` prefix (DistributedDataParallel) when every key has it.
    """
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"{src}: checkpoint file not found")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in several types
        raise CheckpointError(
            f"{src}: cannot be read with torch.load(weights_only=True); it is corrupt or holds "
            f"Python objects other than tensors, which are never unpickled here ({err})"
        ) from err
    notes = []
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj, notes = obj["model"], ["state dict taken from the 'model' entry"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{src}: expected a non-empty dict of tensors, "
                              f"got {type(obj).__name__}")
    bad = sorted(str(k) for k, v in obj.items()
                 if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"{src}: expected {{name: tensor}}, these entries are not: "
                              f"{', '.join(bad)}")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
        notes.append("'module.' prefix stripped")
    return obj, notes


def import_checkpoint(
    src: str | os.PathLike, dst_stem: str | os.PathLike, model_cfg: dict[str, Any],
    *, strict: bool = False,
) -> dict[str, Any]:
    """Validate ``src`` against a model built from ``model_cfg`` and save it at ``dst_stem``.

    ``model_cfg["kind"]`` is ``"pretrain"`` (default; MAE layout, a
    :class:`~dmae.models.dmae.DMAEPretrainModel`) or ``"classifier"`` (timm layout, a
    :class:`~dmae.models.classifier.ViTClassifier`, needs ``model_cfg["num_classes"]``).
    Shape mismatches always raise :class:`CheckpointError` naming key and both shapes;
    missing/unexpected keys are logged and returned in the report (and raise with
    ``strict``). Only tensors the model knows are written, cast to the model's dtypes;
    missing ones are NOT filled in, so a strict load of the result fails loudly.
    Returns the report, which is also stored as the checkpoint's metadata.
    """
    src = Path(src)
    cfg = resolve_config(model_cfg)
    model = _build(cfg)
    state, notes = read_torch_state_dict(src)
    missing, unexpected = load_into(model, state, strict=strict, source=src.name)
    if missing or unexpected:
        logger.warning("%s: missing keys: %s; unexpected keys: %s", src.name,
                       missing or "none", unexpected or "none")
    own = model.state_dict()
    kept = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
    report = {
        "source_file": src.name,
        "source_sha256": sha256_file(src),
        "kind": cfg["kind"],
        "model_cfg": model_cfg,
        "missing_keys": missing,
        "unexpected_keys": unexpected,
        "num_tensors": len(kept),
        "num_values": sum(v.numel() for v in kept.values()),
        "notes": notes,
    }
    save_checkpoint(dst_stem, kept, report)
    logger.info("imported %s -> %s (%d tensors, %d missing, %d unexpected)", src.name,
                dst_stem, len(kept), len(missing), len(unexpected))
    return report


def _build(cfg: dict[str, Any]) -> torch.nn.Module:
    if cfg["kind"] == "pretrain":
        return build_pretrain_model(cfg)
    if cfg["num_classes"] is None:
        raise ValueError("num_classes: required when kind is 'classifier'")
    return build_classifier(cfg, cfg["num_classes"])


def import_pretrained(cfg: dict, source: str | os.PathLike, model: str, pretraining: str,
                      out: str | os.PathLike | None = None, *, strict: bool = False
                      ) -> tuple[dict[str, Any], Path]:
    """Import a published pretrained checkpoint for the config's ``model`` pretrained with
    ``pretraining`` (at ``out``, default :func:`dmae.layout.imported_stem`, which the workflow
    uses instead of pretraining); return the report and stem."""
    from dmae import layout
    from dmae.config import pretrain_settings

    model_cfg = pretrain_settings(cfg, model, pretraining)[0]
    out = Path(out or layout.imported_stem(cfg, model, pretraining))
    return import_checkpoint(source, out, model_cfg, strict=strict), out
