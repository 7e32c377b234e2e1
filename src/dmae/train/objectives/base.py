"""The interface between the training engine and what a run trains for."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch

from dmae.train.hparams import TrainHParams


class Objective(ABC):
    """What a run optimises and how its epochs are compared; the engine knows nothing else
    about the task.

    ``loss`` is the loss of one training micro-batch. ``validation_sums`` are sums over the
    validation images of one process, which add up over processes (the engine all-reduces
    them); ``metrics`` turns the total into the validation metrics, whose names are columns
    of metrics.csv (``dmae.train.state.METRIC_COLUMNS``, one header for every run).
    ``selection`` is ``(metric, "min" or "max")``: what picks best.* and which way is better.

    The engine calls ``loss`` in training mode, and ``validation_sums`` in eval mode without
    gradients; both under autocast. Validation draws from a seeded random stream of its own.
    """

    selection: tuple[str, str]

    def __init__(self, hp: TrainHParams, model: torch.nn.Module) -> None:
        """``model`` is the one being trained, unwrapped (not DDP or compiled), for what the
        objective needs to know of it (a classifier's number of classes)."""
        self.hp = hp

    @abstractmethod
    def loss(self, net: torch.nn.Module, batch: Any, device: torch.device,
             dtype: torch.dtype | None) -> torch.Tensor:
        """The scalar loss of ``batch`` (as the training loader yields it) under ``net``."""

    @abstractmethod
    def validation_sums(self, net: torch.nn.Module, loader: Iterable,
                        device: torch.device) -> torch.Tensor:
        """Sums over ``loader``'s images that ``metrics`` reads, as one float64 tensor."""

    @abstractmethod
    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """The validation metrics of all processes' ``validation_sums`` added up."""


def batch_images(batch: Any) -> torch.Tensor:
    """The images of a batch: ``(images, labels, ...)`` or the images alone."""
    return batch[0] if isinstance(batch, list | tuple) else batch
