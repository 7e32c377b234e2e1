"""The reconstructions stage: a figure of what a pretrained DMAE makes of noisy, masked
validation images (clean / encoder input / reconstruction)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dmae import layout
from dmae.checkpoint import load_checkpoint, load_into
from dmae.data import get_dataset, load_split
from dmae.models import build_pretrain_model
from dmae.report.figures import reconstruction_grid

log = logging.getLogger(__name__)


def reconstructions(cfg: dict, checkpoint: Path, out: Path, images: int = 8) -> None:
    state, meta = load_checkpoint(checkpoint)
    model = build_pretrain_model(meta["model_cfg"])
    load_into(model, state, source=str(checkpoint))
    model.eval()
    transform = get_dataset(cfg["dataset"]["name"]).transform(False, meta["model_cfg"]["img_size"],
                                                              task="pretrain")
    val = load_split(layout.prepared_dir(cfg), "val", transform)
    if len(val) == 0:
        raise ValueError(f"{layout.prepared_dir(cfg)}: the validation split is empty "
                         "(dataset.val_size): no image to reconstruct")
    torch.manual_seed(cfg["runtime"]["seed"])  # the same noise and masks on every run
    clean = torch.stack([val[i][0] for i in range(min(images, len(val)))])
    with torch.inference_mode():
        corrupted, recon, _ = model.reconstruct(clean)
    clean = torch.nn.functional.interpolate(clean, size=corrupted.shape[-2:], mode="bicubic")
    reconstruction_grid(clean, corrupted, recon, out)
    log.info("reconstructions -> %s", out)
