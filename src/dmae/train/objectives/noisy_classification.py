"""Fine-tuning and linear probing: classify images under Gaussian noise, optionally with
consistency regularization (Jeong & Shin 2020) and mixup/cutmix."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dmae.acceleration import autocast
from dmae.models.common import add_gaussian_noise
from dmae.train.evaluate import classifier_sums
from dmae.train.hparams import TrainHParams
from dmae.train.losses import classification_loss, consistency_loss
from dmae.train.objectives.base import Objective


class NoisyClassification(Objective):
    """Cross-entropy of the model on ``x + hp.sigma * N(0, I)``, or the consistency loss over
    ``hp.consistency.m`` noisy copies of each image; mixup/cutmix (timm's ``Mixup``) when
    ``hp.mixup`` or ``hp.cutmix`` is on. Validation: loss and accuracy on clean images, and
    the smoothed classifier's vote over ``hp.eval_noise_samples`` noisy copies, which picks
    the best epoch when it is measured (else the clean accuracy)."""

    def __init__(self, hp: TrainHParams, model: torch.nn.Module) -> None:
        super().__init__(hp, model)
        self.selection = ("val_smoothed_acc" if hp.eval_noise_samples > 0 else "val_acc",
                          "max")
        self.mixup = None
        if hp.mixup > 0 or hp.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=hp.mixup, cutmix_alpha=hp.cutmix,
                               prob=hp.mixup_prob, switch_prob=hp.mixup_switch_prob,
                               mode=hp.mixup_mode, label_smoothing=hp.label_smoothing,
                               num_classes=_num_classes(model))

    def loss(self, net: torch.nn.Module, batch: Any, device: torch.device,
             dtype: torch.dtype | None) -> torch.Tensor:
        hp = self.hp
        imgs, labels = (t.to(device, non_blocking=True) for t in batch[:2])
        copies = hp.consistency.m if hp.consistency.enabled else 1
        x = imgs.repeat(copies, 1, 1, 1) if copies > 1 else imgs
        # noise on [0,1] pixels before the model normalizes, then mixup (paper order)
        x = add_gaussian_noise(x, hp.sigma)
        targets, smoothing = labels, hp.label_smoothing
        if self.mixup is not None:
            # copies are stacked [c1; c2; ...]: batch-mode mixing pairs element j with the
            # flipped element, so all copies of one image get the same partner image and lambda
            x, soft = self.mixup(x, labels.repeat(copies))
            targets, smoothing = soft[: len(imgs)], 0.0  # Mixup already smoothed the targets
        with autocast(device, dtype):
            logits = net(x)
        if copies == 1:
            return classification_loss(logits, targets, smoothing)
        c = hp.consistency
        return consistency_loss(logits.chunk(copies), targets, c.lam, c.eta, smoothing)

    def validation_sums(self, net: torch.nn.Module, loader: Iterable,
                        device: torch.device) -> torch.Tensor:
        return classifier_sums(net, loader, self.hp.sigma, self.hp.eval_noise_samples, device)

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        n = float(sums[3])
        metrics = {"val_loss": float(sums[0]) / n, "val_acc": float(sums[1]) / n}
        if self.hp.eval_noise_samples > 0:
            metrics["val_smoothed_acc"] = float(sums[2]) / n
        return metrics


def _num_classes(model: torch.nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if n is None and isinstance(getattr(model, "head", None), torch.nn.Linear):
        n = model.head.out_features
    if not isinstance(n, int):
        raise ValueError("mixup/cutmix: need the number of classes; expected the model to "
                         "have an int attribute num_classes or a Linear head")
    return n
