"""What a training run optimises: one ``Objective`` per kind of training, registered here.

A new objective is a subclass of ``Objective`` in a module of this package and its entry in
``OBJECTIVES``. Today each task has one (``TASK_OBJECTIVES``); a second one for a task needs a
setting that names it, and ``objective_for`` would read that setting first.
"""

from __future__ import annotations

import torch

from dmae.train.hparams import TrainHParams
from dmae.train.objectives.base import Objective, batch_images
from dmae.train.objectives.masked_denoising import MaskedDenoising
from dmae.train.objectives.noisy_classification import NoisyClassification

OBJECTIVES: dict[str, type[Objective]] = {
    "masked_denoising": MaskedDenoising,
    "noisy_classification": NoisyClassification,
}
# The objective of each task of dmae.train.hparams.TASKS.
TASK_OBJECTIVES = {"pretrain": "masked_denoising", "finetune": "noisy_classification",
                   "linprobe": "noisy_classification"}


def objective_for(hp: TrainHParams, model: torch.nn.Module) -> Objective:
    """The objective that ``hp`` trains ``model`` for (``model`` unwrapped: not DDP or
    compiled)."""
    return OBJECTIVES[TASK_OBJECTIVES[hp.task]](hp, model)


__all__ = ["OBJECTIVES", "TASK_OBJECTIVES", "MaskedDenoising", "NoisyClassification",
           "Objective", "batch_images", "objective_for"]
