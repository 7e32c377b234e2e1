"""Training engine shared by DMAE pretraining, fine-tuning and linear probing."""

from dmae.models.common import add_gaussian_noise
from dmae.train.distributed import DistContext, setup_distributed
from dmae.train.engine import ResumeError, TrainingDivergedError, train
from dmae.train.evaluate import smoothed_vote_accuracy
from dmae.train.hparams import ConsistencyHParams, TrainHParams
from dmae.train.losses import classification_loss, consistency_loss
from dmae.train.optim import (
    build_optimizer,
    build_param_groups,
    effective_batch,
    lr_at,
    peak_lr,
    vit_layer_id,
)
from dmae.train.state import load_resume, read_metrics, seed_everything

__all__ = [
    "ConsistencyHParams",
    "DistContext",
    "TrainHParams",
    "ResumeError",
    "TrainingDivergedError",
    "add_gaussian_noise",
    "build_optimizer",
    "build_param_groups",
    "classification_loss",
    "consistency_loss",
    "effective_batch",
    "load_resume",
    "lr_at",
    "peak_lr",
    "read_metrics",
    "seed_everything",
    "setup_distributed",
    "smoothed_vote_accuracy",
    "train",
    "vit_layer_id",
]
