"""The data stage: verify and prepare the config's dataset under <paths.data>/prepared/."""

from __future__ import annotations

import logging
from pathlib import Path

from dmae.data.prepare import prepare_dataset

log = logging.getLogger(__name__)


def prepare(cfg: dict, force: bool = False) -> Path:
    ds = cfg["dataset"]
    data_root = Path(cfg["paths"]["data"])
    optional = {key: Path(ds[key]) if ds[key] else None for key in ("source_dir", "imagenet_dir")}
    out = prepare_dataset(ds["name"], data_root / "prepared", data_root / "raw" / ds["name"],
                          val_size=ds["val_size"], split_seed=ds["split_seed"],
                          download_url=ds["download_url"],
                          expected_classes=ds["expected_classes"], force=force, **optional)
    log.info("prepared %s in %s", ds["name"], out)
    return out
