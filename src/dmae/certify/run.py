"""Certify a dataset into a resumable TSV, one shard of the images at a time.

Its files and their format are those of ``dmae.certify.records``.

Settings recorded (and checked on resume): sigma, n0, n, alpha, seed, num_classes, noise_chunk,
the ``precision`` the base classifier ran at (fp32, bf16 or fp16: ``runtime.amp`` resolved on
the device), the number and sha256 of the full index list, the shard, the caller's ``config``
(e.g. the model fingerprint) and the certification ``method``: its name and parameters. The
batch size is NOT a setting: noise is drawn in fixed chunks per image, so it only changes speed
(it is recorded under ``info``, with ``compile``, the device and torch version; like the batch
size, torch.compile picks other kernels for the same computation).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dmae.certify.certifier import build_certifier
from dmae.certify.methods import DEFAULT_METHOD
from dmae.certify.noise import DEFAULT_NOISE_CHUNK
from dmae.certify.records import (
    FORMAT,
    HEADER,
    format_row,
    indices_digest,
    normalize_indices,
    read_rows,
    settings_differences,
)
from dmae.io import exclusive, read_json, write_json
from dmae.layout import META, lock_path, meta_path, partial_path
from dmae.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertifyStatus:
    """Where a ``certify_dataset`` call left its output."""

    tsv: Path  # the final TSV (exists only when complete)
    complete: bool
    done: int  # images certified so far in this job (shard)
    total: int  # images this job (shard) has to certify


# ---------------------------------------------------------------------------------------------
# Paths and settings
# ---------------------------------------------------------------------------------------------


def normalize_shard(shard: tuple[int, int] | None) -> list[int] | None:
    """``(i, k)`` as a list, or None for the whole set; ``(0, 1)`` is the whole set."""
    if shard is None:
        return None
    try:
        i, k = (int(v) for v in shard)
    except (TypeError, ValueError) as err:
        raise ValueError(f"shard must be a pair (i, k), got {shard!r}") from err
    if k < 1 or not 0 <= i < k:
        raise ValueError(f"shard (i, k) needs k >= 1 and 0 <= i < k, got {shard!r}")
    return None if k == 1 else [i, k]


def make_settings(*, sigma: float, n0: int, n: int, alpha: float, seed: int, num_classes: int,
                  noise_chunk: int, precision: str, indices: Sequence[int],
                  shard: list[int] | None, config: dict | None, method: dict) -> dict[str, Any]:
    """The settings that determine a TSV's contents (JSON-normalized for comparison)."""
    settings = {
        "format": FORMAT,
        "sigma": float(sigma),
        "n0": int(n0),
        "n": int(n),
        "alpha": float(alpha),
        "seed": int(seed),
        "num_classes": int(num_classes),
        "noise_chunk": int(noise_chunk),
        "precision": precision,
        "indices": {"count": len(indices), "sha256": indices_digest(indices)},
        "shard": shard,
        "config": config or {},
        "method": method,
    }
    try:
        return json.loads(json.dumps(settings))
    except TypeError as err:
        raise ValueError(f"config must be JSON-serializable: {err}") from err


def check_settings(path: Path, settings: dict) -> dict:
    """Read the meta sidecar ``path`` and raise ValueError naming every key that differs."""
    if not path.is_file():
        raise ValueError(f"{path} is missing: cannot tell which settings made "
                         f"{path.name.removesuffix(META)}; delete it to start over")
    meta = read_json(path)
    diffs = settings_differences(meta.get("settings", {}), settings)
    if diffs:
        raise ValueError(f"{path}: existing run has different settings ({'; '.join(diffs)}); "
                         "delete its files to start over or use another output path")
    return meta


# ---------------------------------------------------------------------------------------------
# Model check
# ---------------------------------------------------------------------------------------------


def check_model(model: torch.nn.Module, image: torch.Tensor, num_classes: int,
                device: torch.device) -> None:
    """One forward pass on one clean image; ValueError naming the shapes when they do not fit."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"dataset images must be tensors [C,H,W], got {shape}")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"dataset images must lie in [0,1] (noise is added before "
                         f"normalization), got values in [{lo:.4g}, {hi:.4g}]")
    batch = image.unsqueeze(0).to(device, torch.float32)
    try:
        with torch.inference_mode():
            logits = model.eval()(batch)
    except Exception as err:  # any failure here means the model does not take this input
        raise ValueError(f"model failed on input of shape {list(batch.shape)}: {err}") from err
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (1, num_classes):
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model maps input {list(batch.shape)} to output {shape}, expected "
                         f"logits [1, {num_classes}] (num_classes={num_classes})")


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


def _sync_write(fh, text: str) -> None:
    fh.write(text)
    fh.flush()
    os.fsync(fh.fileno())


def _open_partial(partial: Path, settings: dict, info: dict, todo: Sequence[int]
                  ) -> dict[int, str]:
    """Check or start ``partial`` and its meta; return the rows already done."""
    pmeta = meta_path(partial)
    if partial.exists() and pmeta.is_file():
        _set_aside_if_other_noise(partial, read_json(pmeta).get("info", {}), info)
    if partial.exists():
        check_settings(pmeta, settings)
        rows = read_rows(partial, repair=True)
        unexpected = sorted(set(rows) - set(todo))
        if unexpected:
            raise ValueError(f"{partial}: holds images not in this job, e.g. {unexpected[:5]}")
        if rows:
            log.info("%s: resuming, %d of %d images already done", partial, len(rows), len(todo))
        if not rows and partial.stat().st_size == 0:
            partial.write_text(HEADER)
        return rows
    write_json(pmeta, {"settings": settings, "info": info})
    with open(partial, "w") as fh:
        _sync_write(fh, HEADER)
    return {}


def device_label(device: torch.device) -> str:
    """``cpu``, or ``cuda:<i> (<GPU model>)``: what a partial records of where it ran."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _set_aside_if_other_noise(partial: Path, before: dict, now: dict) -> None:
    """Start a new partial where the old one was made on another kind of device or GPU model:
    their random number generators lay out the same seed's noise differently, so its rows
    would mix two streams. Its rows are kept beside it, not lost."""
    def kind(info: dict) -> str:  # which GPU of a model does not matter
        return re.sub(r"^(\w+):\d+", r"\1", info.get("device", ""))

    if kind(before) == kind(now) or not kind(before):
        return
    aside = partial.with_name(f"{partial.name}.other-device")
    log.warning("%s: made on %s, this job runs on %s, whose noise for the same seed differs: "
                "its rows are set aside as %s, starting a new partial", partial,
                kind(before), kind(now), aside)
    os.replace(partial, aside)
    os.replace(meta_path(partial), meta_path(aside))


def _finish(partial: Path, out_tsv: Path, settings: dict, info: dict, todo: Sequence[int]) -> None:
    """Check the partial TSV covers exactly ``todo`` in order, then rename it onto ``out_tsv``."""
    rows = read_rows(partial)
    if list(rows) != list(todo):
        raise ValueError(f"{partial}: rows do not match the images of this job")
    write_json(meta_path(out_tsv), {"settings": settings, "info": info, "rows": len(rows)})
    os.replace(partial, out_tsv)
    meta_path(partial).unlink(missing_ok=True)


def certify_dataset(model: torch.nn.Module, dataset, indices: Iterable[int], sigma: float, *,
                    n0: int, n: int, alpha: float, batch_size: int, seed: int,
                    out_tsv: str | os.PathLike, num_classes: int,
                    device: torch.device | str | None = None,
                    shard: tuple[int, int] | None = None, config: dict | None = None,
                    progress: bool = True, max_images: int | None = None,
                    noise_chunk: int = DEFAULT_NOISE_CHUNK, method: str = DEFAULT_METHOD,
                    method_options: dict | None = None, amp: str = "auto",
                    compile: bool | str = False) -> CertifyStatus:
    """CERTIFY every image ``dataset[i]`` for i in ``indices`` (or this job's shard of them).

    ``dataset[i]`` returns ``(image in [0,1] as [C,H,W] tensor, label)``. ``indices`` are
    certified in sorted order; ``shard=(i, k)`` takes every k-th of them starting at position i.
    Each image's noise comes from its own generator seeded by ``(seed, idx)``, so the rows do not
    depend on sharding, resuming or ``batch_size``. ``config`` (JSON-serializable, e.g. a model
    fingerprint) is stored with the settings. ``max_images`` stops after that many newly
    certified images (leaving a resumable ``.partial``). ``method`` names the certifier
    (a module of ``dmae.certify.methods``) and ``method_options`` are its settings beyond n0,
    n and alpha (e.g. the adaptive method's ``radii``). The model is moved to ``device``
    (default: CUDA when available) and put in eval mode. ``amp`` and ``compile`` take the values of
    ``runtime.amp`` and ``runtime.compile``: amp "auto" is fp32 on the CPU and bf16 on CUDA
    (``dmae.acceleration.resolve_precision``), compile "auto" compiles on CUDA only.

    Returns a :class:`CertifyStatus`; the TSV at ``out_tsv`` exists only once complete. While
    another process certifies into ``out_tsv`` this raises RuntimeError and writes nothing.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is not None:
        # a shard's GPU (devices.compute_device) becomes the process's current one, so nothing
        # that uses the current device (compiled kernels, caches) opens a context on GPU 0
        torch.cuda.set_device(device)
    certifier = build_certifier(method, model, num_classes, sigma, n0=n0, n=n, alpha=alpha,
                                batch_size=batch_size, device=device, noise_chunk=noise_chunk,
                                amp=amp, compile=compile, **(method_options or {}))
    if max_images is not None and max_images < 0:
        raise ValueError(f"max_images must be >= 0, got {max_images}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    all_indices = normalize_indices(indices)
    shard_spec = normalize_shard(shard)
    todo = all_indices[shard_spec[0]::shard_spec[1]] if shard_spec else all_indices
    if max(all_indices) >= len(dataset):
        raise ValueError(f"index {max(all_indices)} is out of range for a dataset of "
                         f"{len(dataset)} images")
    seed = int(seed)
    settings = make_settings(sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed,
                             num_classes=num_classes, noise_chunk=noise_chunk,
                             precision=certifier.precision, indices=all_indices,
                             shard=shard_spec, config=config, method=certifier.parameters())
    info = {"batch_size": batch_size, "compile": certifier.compiled,
            "device": device_label(device),
            "torch": torch.__version__}

    out_tsv = Path(out_tsv)
    # Two processes certifying into one file (a job and a hand-run command) would interleave
    # their rows in the partial.
    with exclusive(lock_path(out_tsv), str(out_tsv)):
        if out_tsv.exists():
            check_settings(meta_path(out_tsv), settings)
            log.info("%s: already complete", out_tsv)
            return CertifyStatus(out_tsv, True, len(todo), len(todo))

        model = model.to(device).eval()
        if todo:
            check_model(model, dataset[todo[0]][0], num_classes, device)
        out_tsv.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(out_tsv)
        done = _open_partial(partial, settings, info, todo)
        remaining = [i for i in todo if i not in done]
        if max_images is not None:
            remaining = remaining[:max_images]
        start = time.perf_counter()
        with open(partial, "a") as fh:
            for idx in progress_bar(remaining, desc=f"certify sigma={sigma:g}", unit="img",
                                    initial=len(done), total=len(done) + len(remaining),
                                    disable=not progress):
                image, label = dataset[idx]
                cert = certifier.certify(image, certifier.generator(seed, idx), label=int(label))
                _sync_write(fh, format_row(idx, int(label), n0, n, cert))
        if remaining:
            seconds = time.perf_counter() - start
            log.info("certified %d images in %.1f s (%.3f s an image)", len(remaining), seconds,
                     seconds / len(remaining))
        finished = len(done) + len(remaining)
        if finished < len(todo):
            log.info("%s: stopped after %d of %d images", partial, finished, len(todo))
            return CertifyStatus(out_tsv, False, finished, len(todo))
        _finish(partial, out_tsv, settings, info, todo)
        log.info("%s: complete (%d images)", out_tsv, len(todo))
        return CertifyStatus(out_tsv, True, len(todo), len(todo))
