"""Where every artifact of a run lives, in one place for the workflow and the CLI.

    <results>/<name>/pretrain/<model>/<pretraining>/{last,best}.{safetensors,json}
        (+ imported.{safetensors,json}: published weights, used instead of last when present)
    <results>/<name>/finetune/<model>/<method>/sigma_<s>/{best,last}.{safetensors,json}
    <results>/<name>/certify/<model>/<method>/sigma_<s>.tsv   (shards in sigma_<s>/; certified
        by another certify.method than cohen: certify-<that method>/...)
    <results>/<name>/tables/*.{csv,md,tex} + summary.md, figures/*.{png,pdf}, logs/, benchmarks/
"""

from __future__ import annotations

import os
from pathlib import Path

from dmae.config import sigma_key

TABLES = ("certified_accuracy", "best_over_sigma", "paper_comparison", "base_classifiers")
TABLE_FORMATS = ("csv", "md", "tex")
SUMMARY = "summary.md"  # the report's notes (budget, radius ceiling, missing runs), in tables/
METRICS = "metrics.json"  # certified accuracies and ACR as numbers, for `dvc metrics diff`
SEED_TABLE = "seed_spread"  # only for configs with replicates (methods sharing a recipe)
FIGURES = ("certified_accuracy", "best_over_sigma")
FIGURE_FORMATS = ("png", "pdf")
# The figures' curves in long format (one row per curve and radius, dmae.report.curves), for
# the DVC plots that dmae.ops.dvc.stages declares with these axes
CURVES = FIGURES
CURVE_X, CURVE_Y = "radius", "certified accuracy %"


def results_dir(cfg: dict) -> Path:
    return Path(cfg["paths"]["results"]) / cfg["name"]


def prepared_dir(cfg: dict) -> Path:
    return Path(cfg["paths"]["data"]) / "prepared" / cfg["dataset"]["name"]


def pretrain_dir(cfg: dict, model: str, pretraining: str) -> Path:
    return results_dir(cfg) / "pretrain" / model / pretraining


# The pretrain rule writes PRETRAINED; `dmae import-checkpoint` writes IMPORTED beside it. No
# rule produces IMPORTED, so Snakemake never plans a job over it, whatever the file times.
PRETRAINED = "last"
IMPORTED = "imported"


def pretrain_checkpoint(cfg: dict, model: str, pretraining: str) -> Path:
    """The weights the pretrain rule writes for (model, pretraining)."""
    return pretrain_dir(cfg, model, pretraining) / f"{PRETRAINED}.safetensors"


def imported_stem(cfg: dict, model: str, pretraining: str) -> Path:
    """Where `dmae import-checkpoint` writes published weights for (model, pretraining)."""
    return pretrain_dir(cfg, model, pretraining) / IMPORTED


def pretrained_weights(checkpoint: str | os.PathLike) -> Path:
    """The weights to start from for a pretrain rule's ``checkpoint`` (``.../last.safetensors``,
    of this run or, as a recipe's ``init``, of another): the imported file beside it when it
    exists, else ``checkpoint`` itself (any other path too)."""
    checkpoint = Path(checkpoint)
    imported = checkpoint.with_name(f"{IMPORTED}.safetensors")
    if checkpoint.name == f"{PRETRAINED}.safetensors" and imported.is_file():
        return imported
    return checkpoint


def pretrain_origin(checkpoint: str | os.PathLike) -> tuple[str, str, str] | None:
    """(run name, model, pretraining) of a path laid out as a pretrain rule's checkpoint,
    ``<results>/<name>/pretrain/<model>/<pretraining>/last.safetensors``; else None."""
    parts = Path(checkpoint).parts
    if len(parts) >= 5 and parts[-4] == "pretrain" and parts[-1] == f"{PRETRAINED}.safetensors":
        return parts[-5], parts[-3], parts[-2]
    return None


def finetune_dir(cfg: dict, model: str, method: str, sigma: float | str) -> Path:
    return results_dir(cfg) / "finetune" / model / method / f"sigma_{sigma_key(sigma)}"


def certify_dir(cfg: dict) -> Path:
    """The certifications of the config's certify.method: ``certify`` for cohen (the paper's
    CERTIFY), ``certify-<method>`` for another, so that certifying the same fine-tuned
    classifiers another way keeps the first certifications beside it."""
    method = cfg["certify"]["method"]
    return results_dir(cfg) / ("certify" if method == "cohen" else f"certify-{method}")


def certify_tsv(cfg: dict, model: str, method: str, sigma: float | str) -> Path:
    return certify_dir(cfg) / model / method / f"sigma_{sigma_key(sigma)}.tsv"


def certify_shard_tsv(cfg: dict, model: str, method: str, sigma: float | str, shard: int) -> Path:
    shards = cfg["certify"]["shards"]
    folder = certify_tsv(cfg, model, method, sigma).with_suffix("")
    return folder / f"shard_{shard}-of-{shards}.tsv"


def partial_path(out_tsv: str | os.PathLike) -> Path:
    """Where a certification TSV's rows collect until every image is done."""
    out_tsv = Path(out_tsv)
    return out_tsv.with_name(out_tsv.name + ".partial")


def lock_path(out_tsv: str | os.PathLike) -> Path:
    """The lock a certification holds while it writes ``out_tsv`` (dmae.io.exclusive)."""
    out_tsv = Path(out_tsv)
    return out_tsv.with_name(out_tsv.name + ".lock")


def meta_path(tsv: str | os.PathLike) -> Path:
    """Sidecar settings file of a certification TSV (final or ``.partial``)."""
    tsv = Path(tsv)
    return tsv.with_name(tsv.name + ".meta.json")


def runs(cfg: dict) -> list[tuple[str, str, str]]:
    """Every (model, method, sigma) the config fine-tunes and certifies."""
    return [(model, method, sigma_key(sigma))
            for model in cfg["models"] for method in cfg["methods"] for sigma in cfg["sigmas"]]


def used_pretrainings(cfg: dict) -> list[tuple[str, str]]:
    """(model, pretraining) pairs that some method fine-tunes from."""
    names = sorted({spec["pretraining"] for spec in cfg["methods"].values()
                    if spec["pretraining"] is not None})
    return [(model, name) for model in cfg["models"] for name in names]


def has_replicates(cfg: dict) -> bool:
    """Whether some recipe is run by several methods (seeds), so the report adds SEED_TABLE."""
    recipes = [m["recipe"] for m in cfg["methods"].values() if m.get("recipe")]
    return len(recipes) != len(set(recipes))


def table_names(cfg: dict) -> tuple[str, ...]:
    return TABLES + ((SEED_TABLE,) if has_replicates(cfg) else ())


def table_paths(cfg: dict) -> list[Path]:
    """Every file of the tables folder the report writes: each table in each format, the
    summary and the metrics JSON."""
    tables = results_dir(cfg) / "tables"
    return [tables / f"{name}.{ext}" for name in table_names(cfg) for ext in TABLE_FORMATS] + [
        tables / SUMMARY, tables / METRICS, *curve_paths(cfg)]


def curve_paths(cfg: dict) -> list[Path]:
    return [results_dir(cfg) / "tables" / f"{name}_curves.csv" for name in CURVES]


def figure_paths(cfg: dict) -> list[Path]:
    return [results_dir(cfg) / "figures" / f"{name}.{ext}"
            for name in FIGURES for ext in FIGURE_FORMATS]


def reconstruction_figure(cfg: dict, model: str, pretraining: str) -> Path:
    return results_dir(cfg) / "figures" / f"reconstructions_{model}-{pretraining}.png"


def reference_hashes(cfg: dict, vendor: str) -> Path:
    """The md5 of every output of the config's committed run as a CPU of ``vendor`` wrote
    them, for a rerun on such a CPU to be checked against (dmae.ops.check)."""
    return results_dir(cfg) / "reference" / f"{vendor}.json"
