"""Models: the DMAE pretraining autoencoder, classifiers on its encoder, presets, import."""

from dmae.models.classifier import (
    LinearProbe,
    ViTClassifier,
    encoder_state_dict,
    load_encoder,
)
from dmae.models.common import IMAGENET_MEAN, IMAGENET_STD, add_gaussian_noise, resize_to
from dmae.models.convert import import_checkpoint, read_torch_state_dict
from dmae.models.dmae import DMAEPretrainModel
from dmae.models.pos_embed import get_2d_sincos_pos_embed
from dmae.models.presets import (
    PRESETS,
    PRETRAINING_KEYS,
    build_classifier,
    build_downstream,
    build_linear_probe,
    build_pretrain_model,
    resolve_config,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "PRETRAINING_KEYS",
    "DMAEPretrainModel",
    "LinearProbe",
    "ViTClassifier",
    "add_gaussian_noise",
    "build_classifier",
    "build_downstream",
    "build_linear_probe",
    "build_pretrain_model",
    "encoder_state_dict",
    "get_2d_sincos_pos_embed",
    "import_checkpoint",
    "load_encoder",
    "read_torch_state_dict",
    "resize_to",
    "resolve_config",
]
