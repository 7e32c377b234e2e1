"""Validation: pretraining loss, clean accuracy and smoothed (majority-vote) accuracy."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from dmae.models.common import add_gaussian_noise
from dmae.progress import progress_bar


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def validation_batches(loader: Iterable, what: str, *, progress: bool = True) -> Iterable:
    """``loader``'s batches, counted by a progress bar on stderr (of ``len(loader)`` batches
    when it has a length) that says ``what`` is validated; the batches are not changed.

    Cleared when done, like training's bar; redrawn at most every 25 s in a log file.
    """
    return progress_bar(loader, desc=f"validate {what}", unit="batch", disable=not progress,
                        leave=False, dynamic_ncols=True)


@torch.no_grad()
def pretrain_loss_sums(model: torch.nn.Module, loader: Iterable,
                       device: torch.device | None = None) -> torch.Tensor:
    """``[sum of batch-size-weighted losses, number of images]`` of a pretraining model."""
    device = device or _device_of(model)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for imgs, *_ in loader:
        imgs = imgs.to(device, non_blocking=True)
        loss = model(imgs)[0]
        sums += torch.stack([loss.double() * len(imgs), torch.tensor(len(imgs), device=device,
                                                                     dtype=torch.float64)])
    return sums


@torch.no_grad()
def classifier_sums(model: torch.nn.Module, loader: Iterable, sigma: float, samples: int,
                    device: torch.device | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """``[CE sum, clean correct, smoothed-vote correct, images]`` over ``loader``.

    The smoothed vote classifies ``samples`` noisy copies ``x + sigma * N(0, I)`` of each image
    and takes the most frequent class (ties go to the lower class index), the prediction of
    Cohen et al.'s smoothed classifier. With ``samples == 0`` the vote column stays 0.
    """
    device = device or _device_of(model)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for imgs, labels in loader:
        imgs = imgs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = model(imgs).float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += (logits.argmax(1) == labels).sum()
        if samples > 0:
            votes = torch.zeros_like(logits, dtype=torch.long)
            for _ in range(samples):
                pred = model(add_gaussian_noise(imgs, sigma, generator)).argmax(1)
                votes[torch.arange(len(pred), device=device), pred] += 1
            sums[2] += (votes.argmax(1) == labels).sum()
        sums[3] += len(imgs)
    return sums


def smoothed_vote_accuracy(model: torch.nn.Module, loader: Iterable, sigma: float, samples: int,
                           *, device: str | torch.device | None = None,
                           generator: torch.Generator | None = None,
                           progress: bool = True) -> float:
    """Fraction of images whose majority vote over ``samples`` noisy copies is the label.

    Puts ``model`` in eval mode for the duration and restores its previous mode. ``progress``
    shows a bar of the batches on stderr.
    """
    if samples < 1:
        raise ValueError(f"samples: expected an integer >= 1, got {samples}")
    was_training = model.training
    model.eval()
    try:
        batches = validation_batches(loader, f"smoothed vote sigma={sigma:g}", progress=progress)
        sums = classifier_sums(model, batches, sigma, samples,
                               torch.device(device) if device is not None else None, generator)
    finally:
        model.train(was_training)
    return float(sums[2] / sums[3]) if sums[3] > 0 else float("nan")
