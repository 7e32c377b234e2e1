"""Checkpoints: weights in safetensors plus a JSON of metadata; nothing goes through pickle.

A checkpoint ``<stem>`` is two files: ``<stem>.safetensors`` (the model's state dict) and
``<stem>.json`` (config, epoch, step, metrics, package version, data manifest hash...).
Training state for resuming (optimizer, scheduler, scaler, RNG) lives in a separate file
written by the training engine and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dmae import __version__
from dmae.io import atomic_path, read_json, write_json


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def _paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_checkpoint(
    stem: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict
) -> Path:
    """Write ``state_dict`` and ``meta`` atomically; returns the .safetensors path.

    The JSON is written last, so a weights file without its JSON is never taken as complete.
    """
    weights_path, meta_path = _paths(stem)
    # safetensors refuses shared or non-contiguous storage; clone to plain tensors on the CPU.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json(meta_path, {"dmae_version": __version__, **meta})
    return weights_path


def checkpoint_exists(stem: str | os.PathLike) -> bool:
    """Whether both files of the checkpoint ``stem`` are there."""
    return all(path.is_file() for path in _paths(stem))


def copy_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give checkpoint ``source`` a second name ``target``: a hard link where the file system
    allows one (no second copy of the weights on disk), else a copy; JSON last, as saved."""
    for src, dst in zip(_paths(source), _paths(target), strict=True):
        with atomic_path(dst) as tmp:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)


def load_checkpoint(stem: str | os.PathLike, device: str | torch.device = "cpu"):
    """Return ``(state_dict, meta)``; raises CheckpointError naming the missing file."""
    weights_path, meta_path = _paths(stem)
    for path in (weights_path, meta_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        state = load_file(str(weights_path), device=str(device))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({err})") from err
    return state, read_json(meta_path)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, strict: bool = True,
              source: str = "checkpoint") -> tuple[list[str], list[str]]:
    """Load ``state`` into ``model`` by name, naming every mismatched key and shape.

    With ``strict`` any missing or unexpected key is an error; otherwise the lists of
    missing and unexpected keys are returned for the caller to report. A shape mismatch
    is always an error.
    """
    own = model.state_dict()
    shape_errors = [
        f"{k}: {source} has {tuple(v.shape)}, model expects {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    problems = list(shape_errors)
    if strict and missing:
        problems.append(f"missing from {source}: {', '.join(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected in {source}: {', '.join(unexpected)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}:\n  "
                              + "\n  ".join(problems))
    model.load_state_dict(state, strict=False)
    return missing, unexpected
