"""The certification stage: a config's certification of one fine-tuned classifier, in shards
that are merged afterwards."""

from __future__ import annotations

import logging
from pathlib import Path

from dmae import devices, layout
from dmae.certify.methods import method_settings
from dmae.certify.records import merge_shards
from dmae.data import read_manifest
from dmae.io import read_json, sha256_file
from dmae.layout import meta_path, partial_path

log = logging.getLogger(__name__)


def certify(cfg: dict, checkpoint: Path, sigma: float, out: Path,
            shard: tuple[int, int] | None = None, allow_sigma_mismatch: bool = False) -> None:
    """Certify the config's images (``certify_indices``; this shard of them) into ``out``."""
    # Here, not at the top: a merge job then loads no torch (seconds per job).
    from dmae.certify.run import certify_dataset
    from dmae.data import get_dataset, load_split

    device = devices.compute_device(cfg, job=f"certify {out}")  # before anything is read
    model, meta = load_classifier(checkpoint)
    mismatch = check_sigma(checkpoint, meta, sigma, allow_sigma_mismatch)
    c = cfg["certify"]
    name = cfg["dataset"]["name"]
    images = load_split(layout.prepared_dir(cfg), c["split"],
                        get_dataset(name).transform(False, meta["model_cfg"]["img_size"]))
    if images.num_classes != meta["num_classes"]:
        raise ValueError(f"{checkpoint}: a {meta['num_classes']}-class model cannot certify "
                         f"{name} ({images.num_classes} classes)")
    fingerprint = {"checkpoint_sha256": sha256_file(Path(checkpoint).with_suffix(".safetensors")),
                   "dataset": name, "split": c["split"], **mismatch}
    _drop_stale_partial(out, fingerprint)
    method, sampling = method_settings(cfg)
    n0, n, alpha = sampling.pop("n0"), sampling.pop("n"), sampling.pop("alpha")
    status = certify_dataset(
        model, images, certify_indices(cfg, len(images)), sigma, n0=n0, n=n, alpha=alpha,
        batch_size=c["batch_size"], seed=c["seed"], out_tsv=out,
        num_classes=meta["num_classes"], device=device,
        shard=shard, config=fingerprint, method=method, method_options=sampling,
        amp=cfg["runtime"]["amp"], compile=cfg["runtime"]["compile"])
    log.info("certified %d/%d images -> %s", status.done, status.total, status.tsv)


def merge(cfg: dict, shards: list[Path], out: Path) -> None:
    """Check that the shards are complete and disjoint, and merge them into ``out``."""
    split_size = read_manifest(layout.prepared_dir(cfg))["counts"][cfg["certify"]["split"]]
    merge_shards(shards, out, certify_indices(cfg, split_size))
    log.info("merged %d shards -> %s", len(shards), out)


def certify_indices(cfg: dict, split_size: int) -> list[int]:
    """The images to certify: every ``stride``-th from ``start`` (at most max_images)."""
    c = cfg["certify"]
    indices = list(range(c["start"], split_size, c["stride"]))
    return indices[: c["max_images"]] if c["max_images"] else indices


def check_sigma(checkpoint: Path, meta: dict, sigma: float, allow: bool) -> dict:
    """Refuse to smooth at another noise level than the classifier was fine-tuned at (its
    certificates would hold, for a classifier that was never meant for that noise). Allowed,
    the fine-tuning sigma is returned to be recorded beside the results; else {}."""
    trained = meta.get("sigma")
    if trained is None or float(trained) == float(sigma):
        return {}
    if not allow:
        raise ValueError(f"{checkpoint}: fine-tuned at sigma {trained}, asked to certify at "
                         f"sigma {sigma}; expected the same sigma (pass "
                         f"--allow-sigma-mismatch to certify at another noise level)")
    log.warning("%s: fine-tuned at sigma %s, certifying at sigma %s", checkpoint, trained, sigma)
    return {"checkpoint_sigma": float(trained)}


def load_classifier(checkpoint: Path):
    """A fine-tuned classifier rebuilt from its checkpoint's own metadata."""
    from dmae.checkpoint import load_checkpoint, load_into
    from dmae.models import build_downstream

    state, meta = load_checkpoint(checkpoint)
    model = build_downstream(meta["model_cfg"], meta["num_classes"], meta["task"])
    load_into(model, state, source=str(checkpoint))
    return model, meta


def _drop_stale_partial(out_tsv: Path, fingerprint: dict) -> None:
    """Remove a half-done certification made with another model checkpoint.

    The workflow certifies again exactly when the fine-tuned checkpoint changed, so such rows
    can never be completed; any other difference in settings is left for certify_dataset to
    report.
    """
    partial = partial_path(out_tsv)
    if not (partial.exists() and meta_path(partial).is_file()):
        return
    old = read_json(meta_path(partial)).get("settings", {}).get("config", {})
    if old.get("checkpoint_sha256") != fingerprint["checkpoint_sha256"]:
        log.info("%s: made with another checkpoint, starting afresh", partial)
        partial.unlink()
        meta_path(partial).unlink()
