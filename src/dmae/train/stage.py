"""The pretraining and fine-tuning stages: a config's run, from settings to checkpoint.

Both seed before building the model (its initialisation draws from the seeded stream), record
what they started from in the checkpoint's metadata, and resume an interrupted run only when
it was started with the same settings and inputs. A run asked for again after it finished
(its job was killed before Snakemake saw it end, or its outputs were deleted) trains nothing:
its checkpoints are written again from the resume state, unless the code changed since.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from dmae import config as cfglib
from dmae import devices, layout
from dmae.checkpoint import load_checkpoint, load_into, save_checkpoint
from dmae.data import get_dataset, load_split, manifest_hash, read_manifest
from dmae.io import read_json, sha256_file, write_json
from dmae.models import build_downstream, build_pretrain_model, load_encoder
from dmae.train.engine import train
from dmae.train.hparams import TrainHParams
from dmae.train.state import seed_everything

log = logging.getLogger(__name__)


def pretrain(cfg: dict, model_name: str, pretraining: str, out: Path | None = None) -> Path:
    """DMAE (or MAE) pretraining of one model with one recipe; returns the run folder."""
    model_cfg, hp = cfglib.pretrain_settings(cfg, model_name, pretraining)
    recipe = cfg["pretrainings"][pretraining]
    out = Path(out or layout.pretrain_dir(cfg, model_name, pretraining))
    device = devices.device(cfg, job=f"pretrain {out}") if recipe["train"] else None
    seed_everything(hp["seed"])
    model = build_pretrain_model(model_cfg)
    meta = {"model": model_name, "pretraining": pretraining, "model_cfg": model_cfg}
    if recipe["init"]:
        init = str(layout.pretrained_weights(recipe["init"]))  # or the import beside it
        state, _ = load_checkpoint(init)
        load_into(model, state, source=init)
        meta["init"] = {"path": init, "sha256": _weights_sha256(init)}
    if not recipe["train"]:
        save_checkpoint(out / layout.PRETRAINED, model.state_dict(), {**meta, "epoch": 0})
        log.info("%s used as it is (no continued pretraining) -> %s", meta["init"]["path"], out)
        return out
    _train(cfg, model, model_cfg, hp, out, meta, "pretrain", device)
    return out


def finetune(cfg: dict, model_name: str, method: str, sigma: float,
             pretrained: Path | None = None, out: Path | None = None) -> Path:
    """Fine-tuning (or linear probing) of one classifier for one method and noise level."""
    model_cfg, hp = cfglib.finetune_settings(cfg, model_name, method, sigma)
    out = Path(out or layout.finetune_dir(cfg, model_name, method, sigma))
    device = devices.device(cfg, job=f"finetune {out}")  # before anything is read
    num_classes = read_manifest(layout.prepared_dir(cfg))["num_classes"]
    seed_everything(hp["seed"])  # the head (and any untrained layer) draws from this stream
    model = build_downstream(model_cfg, num_classes, hp["task"])
    meta = {"model": model_name, "method": method, "sigma": sigma, "model_cfg": model_cfg,
            "num_classes": num_classes}
    if pretrained:
        state, _ = load_checkpoint(pretrained)
        missing, unexpected = load_encoder(model, state, source=str(pretrained))
        log.info("encoder from %s (not loaded: %s; unused: %s)", pretrained,
                 ", ".join(missing) or "none", ", ".join(unexpected) or "none")
        meta["pretrained"] = {"path": str(pretrained), "sha256": _weights_sha256(pretrained)}
    elif cfg["methods"][method]["pretraining"] is not None:
        raise ValueError(f"methods.{method} fine-tunes a pretrained encoder: "
                         "pass --pretrained <checkpoint>")
    _train(cfg, model, model_cfg, hp, out, meta, "finetune", device)
    return out


def splits(cfg: dict, img_size: int, hp: dict):
    """The prepared train and validation splits with the task's transforms. RandAugment is a
    data setting that shares the hyperparameter blocks: it is taken out of ``hp`` here."""
    dataset = get_dataset(cfg["dataset"]["name"])
    prepared = layout.prepared_dir(cfg)
    train_set = load_split(prepared, "train", dataset.transform(
        True, img_size, task=hp["task"], randaugment=hp.pop("randaugment", None)))
    val_set = load_split(prepared, "val", dataset.transform(False, img_size, task=hp["task"]))
    return train_set, val_set


def _train(cfg: dict, model, model_cfg: dict, hp: dict, out: Path, meta: dict,
           subcommand: str, device: str | None) -> None:
    train_set, val_set = splits(cfg, model_cfg["img_size"], hp)
    meta["data_manifest_sha256"] = manifest_hash(layout.prepared_dir(cfg))
    # accum_iter may change on resume with the number of processes: the engine checks that
    # the effective batch, which is what shapes the run, stays the same.
    settings = [model_cfg, {k: v for k, v in hp.items() if k != "accum_iter"}]
    record = _fresh_if_changed(out, {"settings": settings, "meta": meta},
                               _code_digest(subcommand))
    train(model, train_set, val_set, TrainHParams.from_dict(hp), out, meta=meta,
          device=device)
    write_json(record, {**read_json(record), "finished": True})


def _weights_sha256(checkpoint: str | Path) -> str:
    return sha256_file(Path(checkpoint).with_suffix(f".{layout.CHECKPOINT_FORMATS[0]}"))


def _code_digest(subcommand: str) -> str:
    """The digest of the code `dmae <subcommand>` runs (``dmae.code_identity``), imported by
    name so that the code which measures is not counted in what it measures."""
    return importlib.import_module("dmae.code_identity").subcommand_digest(subcommand)


def _fresh_if_changed(out_dir: Path, fingerprint: dict, code: str) -> Path:
    """Keep the resume state of the same run; remove another run's.

    The engine resumes from ``out_dir/resume.pt``. That state belongs to another run when the
    settings, the data or the starting checkpoint changed since, or when the run finished with
    other code (asked again after a code change, its outputs are to be recomputed). A finished
    run of the same code resumes at its end: the engine writes its outputs again. An unfinished
    one resumes even after a code change (days of training are not thrown away for it), with a
    warning. Returns the record that is marked finished at the end.
    """
    record = out_dir / layout.RUN_RECORD
    if record.is_file():
        old = read_json(record)
        same_code = old.get("code") == code
        if old.get("fingerprint") != fingerprint or (old.get("finished") and not same_code):
            log.info("%s: %s, starting afresh", out_dir, "settings or inputs changed"
                     if old.get("fingerprint") != fingerprint else "the code changed")
            for name in (layout.RESUME, layout.METRICS_CSV, layout.TIMING_CSV):
                (out_dir / name).unlink(missing_ok=True)
        elif old.get("finished"):
            log.info("%s: finished earlier with the same settings, inputs and code; writing "
                     "its outputs again from its resume state", out_dir)
        elif not same_code:
            log.warning("%s: the code changed since this run started; resuming it anyway "
                        "(remove %s to start afresh)", out_dir, out_dir / layout.RESUME)
    write_json(record, {"fingerprint": fingerprint, "code": code, "finished": False})
    return record
