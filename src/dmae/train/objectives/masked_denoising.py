"""DMAE (and MAE) pretraining: reconstruct the clean image from a noisy, masked one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dmae.acceleration import autocast
from dmae.train.evaluate import pretrain_loss_sums
from dmae.train.objectives.base import Objective, batch_images


class MaskedDenoising(Objective):
    """The pretraining model's own loss: it adds the noise, masks the patches and scores its
    reconstruction (``dmae.models.dmae.DMAEPretrainModel``); the best epoch has the lowest
    validation loss."""

    selection = ("val_loss", "min")

    def loss(self, net: torch.nn.Module, batch: Any, device: torch.device,
             dtype: torch.dtype | None) -> torch.Tensor:
        imgs = batch_images(batch).to(device, non_blocking=True)
        with autocast(device, dtype):
            return net(imgs)[0].float()

    def validation_sums(self, net: torch.nn.Module, loader: Iterable,
                        device: torch.device) -> torch.Tensor:
        return pretrain_loss_sums(net, loader, device)

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        return {"val_loss": float(sums[0] / sums[1])}
