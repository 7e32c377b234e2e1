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
import re
from pathlib import Path

from dmae.config import sigma_key

# The names of the files inside a run's folders, spelled here only.
MANIFEST = "manifest.json"  # a prepared dataset's (dmae.data.prepare)
CHECKPOINT_FORMATS = ("safetensors", "json")  # a checkpoint stem's weights and metadata
BEST, LAST = "best", "last"  # a training's checkpoint stems
KEPT_BEST = "resume-best-{epoch}"  # the best.* that resume.pt's epoch had, kept beside it
RESUME = "resume.pt"  # optimizer, RNG and progress of an unfinished training
METRICS_CSV = "metrics.csv"  # one row per epoch of what a training learned
TIMING_CSV = "timing.csv"  # how long each epoch took (no rerun reproduces it)
RUN_RECORD = "run.json"  # the settings, inputs and code a training ran with
META = ".meta.json"  # appended to a certification TSV's name: its settings and machine

# The report's files; which tables and figures a config has is dmae.report.registry's
TABLE_FORMATS = ("csv", "md", "tex")
SUMMARY = "summary.md"  # the report's notes (budget, radius ceiling, missing runs), in tables/
METRICS = "metrics.json"  # certified accuracies and ACR as numbers, for `dvc metrics diff`
FIGURE_FORMATS = ("png", "pdf")
# The figures' curves in long format (one row per curve and radius, dmae.report.curves), for
# the DVC plots that dmae.ops.dvc.stages declares with these axes
CURVE_X, CURVE_Y = "radius", "certified accuracy %"


# Every artifact path, as a pattern with named fields. The workflow leaves a job's fields
# ({model}, {method}, {pretraining}, {sigma}, {shard}) open as Snakemake wildcards; the
# library fills them in. {results}, {data}, {dataset}, {certified} and {shards} come from
# the config (``_config_fields``).
PATTERNS = {
    "prepared": "{data}/prepared/{dataset}",
    "manifest": "{data}/prepared/{dataset}/" + MANIFEST,
    "pretrain_dir": "{results}/pretrain/{model}/{pretraining}",
    "pretrained": "{results}/pretrain/{model}/{pretraining}/{stem}.{format}",
    "finetune_dir": "{results}/finetune/{model}/{method}/sigma_{sigma}",
    "finetuned": "{results}/finetune/{model}/{method}/sigma_{sigma}/{stem}.{format}",
    "finetune_metrics": "{results}/finetune/{model}/{method}/sigma_{sigma}/" + METRICS_CSV,
    "certified": "{certified}/{model}/{method}/sigma_{sigma}.tsv",
    "certified_shard": "{certified}/{model}/{method}/sigma_{sigma}/shard_{shard}-of-{shards}.tsv",
    "reconstructions": "{results}/figures/reconstructions_{model}-{pretraining}.png",
    "table": "{results}/tables/{table}.{format}",
    "report_file": "{results}/tables/{file}",  # SUMMARY, METRICS
    "curves": "{results}/tables/{figure}_curves.csv",
    "figure": "{results}/figures/{figure}.{format}",
    "log": "{results}/logs/{job}.log",
    "benchmark": "{results}/benchmarks/{job}.tsv",
}
# Each rule's jobs' log and benchmark names ({job} above), by rule.
JOB_RECORDS = {
    "prepare_data": "prepare_{dataset}",
    "pretrain": "pretrain/{model}_{pretraining}",
    "reconstructions": "reconstructions/{model}_{pretraining}",
    "finetune": "finetune/{model}_{method}_sigma_{sigma}",
    "certify_shard": "{certify_kind}/{model}_{method}_sigma_{sigma}_shard_{shard}",
    "merge_certify": "{certify_kind}/{model}_{method}_sigma_{sigma}_merge",
    "report": "report",
}
_FIELD = re.compile(r"\{(\w+)\}")


# The fields a config fills in, each read only where a pattern names it.
_CONFIG_FIELDS = {
    "results": lambda cfg: str(results_dir(cfg)),
    "data": lambda cfg: cfg["paths"]["data"],
    "dataset": lambda cfg: cfg["dataset"]["name"],
    "certified": lambda cfg: str(certify_dir(cfg)),
    "certify_kind": lambda cfg: certify_dir(cfg).name,
    "shards": lambda cfg: str(cfg["certify"]["shards"]),
}


def _config_fields(cfg: dict, template: str) -> dict[str, str]:
    return {name: _CONFIG_FIELDS[name](cfg) for name in _FIELD.findall(template)
            if name in _CONFIG_FIELDS}


def fill(template: str, **fields) -> str:
    """``template`` with the given fields filled in and every other ``{field}`` left open."""
    return _FIELD.sub(lambda m: str(fields[m[1]]) if m[1] in fields else m[0], template)


def pattern(cfg: dict, name: str, **fields) -> str:
    """The path ``PATTERNS[name]`` of ``cfg``, with ``fields`` filled in (a sigma in its
    file-name form, ``sigma_key``) and the job's other fields left open."""
    if "sigma" in fields:
        fields["sigma"] = sigma_key(fields["sigma"])
    return fill(PATTERNS[name], **_config_fields(cfg, PATTERNS[name]), **fields)


def path(cfg: dict, name: str, **fields) -> Path:
    """``pattern`` with every field given; an open one is an error naming it."""
    text = pattern(cfg, name, **fields)
    if missing := _FIELD.findall(text):
        raise KeyError(f"layout {name!r}: no value for {', '.join(missing)}")
    return Path(text)


def job_record(cfg: dict, kind: str, rule: str, **fields) -> str:
    """The log (``kind`` "log") or benchmark ("benchmark") of a job of ``rule``."""
    job = fill(JOB_RECORDS[rule], **_config_fields(cfg, JOB_RECORDS[rule]))
    return pattern(cfg, kind, job=job, **fields)


def checkpoint_files(stem: str | os.PathLike) -> list[Path]:
    """The files of the checkpoint ``stem`` (weights, then metadata; dmae.checkpoint)."""
    return [Path(f"{stem}.{format}") for format in CHECKPOINT_FORMATS]


def results_dir(cfg: dict) -> Path:
    return Path(cfg["paths"]["results"]) / cfg["name"]


def prepared_dir(cfg: dict) -> Path:
    return path(cfg, "prepared")


def manifest(cfg: dict) -> Path:
    return path(cfg, "manifest")


def pretrain_dir(cfg: dict, model: str, pretraining: str) -> Path:
    return path(cfg, "pretrain_dir", model=model, pretraining=pretraining)


# The pretrain rule writes PRETRAINED; `dmae import-checkpoint` writes IMPORTED beside it. No
# rule produces IMPORTED, so Snakemake never plans a job over it, whatever the file times.
PRETRAINED = LAST
IMPORTED = "imported"


def pretrain_checkpoint(cfg: dict, model: str, pretraining: str) -> Path:
    """The weights the pretrain rule writes for (model, pretraining)."""
    return path(cfg, "pretrained", model=model, pretraining=pretraining, stem=PRETRAINED,
                format=CHECKPOINT_FORMATS[0])


def imported_stem(cfg: dict, model: str, pretraining: str) -> Path:
    """Where `dmae import-checkpoint` writes published weights for (model, pretraining)."""
    return pretrain_dir(cfg, model, pretraining) / IMPORTED


def pretrained_weights(checkpoint: str | os.PathLike) -> Path:
    """The weights to start from for a pretrain rule's ``checkpoint`` (``.../last.safetensors``,
    of this run or, as a recipe's ``init``, of another): the imported file beside it when it
    exists, else ``checkpoint`` itself (any other path too)."""
    checkpoint = Path(checkpoint)
    weights = f"{PRETRAINED}.{CHECKPOINT_FORMATS[0]}"
    imported = checkpoint.with_name(f"{IMPORTED}.{CHECKPOINT_FORMATS[0]}")
    if checkpoint.name == weights and imported.is_file():
        return imported
    return checkpoint


def pretrain_origin(checkpoint: str | os.PathLike) -> tuple[str, str, str] | None:
    """(run name, model, pretraining) of a path laid out as a pretrain rule's checkpoint,
    ``<results>/<name>/pretrain/<model>/<pretraining>/last.safetensors``; else None."""
    parts = Path(checkpoint).parts
    weights = f"{PRETRAINED}.{CHECKPOINT_FORMATS[0]}"
    if len(parts) >= 5 and parts[-4] == "pretrain" and parts[-1] == weights:
        return parts[-5], parts[-3], parts[-2]
    return None


def finetune_dir(cfg: dict, model: str, method: str, sigma: float | str) -> Path:
    return path(cfg, "finetune_dir", model=model, method=method, sigma=sigma)


def finetuned(cfg: dict, model: str, method: str, sigma: float | str,
              format: str = CHECKPOINT_FORMATS[0]) -> Path:
    """The checkpoint (``format``: its weights or metadata) that certification reads."""
    return path(cfg, "finetuned", model=model, method=method, sigma=sigma,
                stem=cfg["certify"]["checkpoint"], format=format)


def certify_dir(cfg: dict) -> Path:
    """The certifications of the config's certify.method: ``certify`` for cohen (the paper's
    CERTIFY), ``certify-<method>`` for another, so that certifying the same fine-tuned
    classifiers another way keeps the first certifications beside it."""
    method = cfg["certify"]["method"]
    return results_dir(cfg) / ("certify" if method == "cohen" else f"certify-{method}")


def certify_tsv(cfg: dict, model: str, method: str, sigma: float | str) -> Path:
    return path(cfg, "certified", model=model, method=method, sigma=sigma)


def certify_shard_tsv(cfg: dict, model: str, method: str, sigma: float | str, shard: int) -> Path:
    return path(cfg, "certified_shard", model=model, method=method, sigma=sigma, shard=shard)


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
    return tsv.with_name(tsv.name + META)


def runs(cfg: dict) -> list[tuple[str, str, str]]:
    """Every (model, method, sigma) the config fine-tunes and certifies."""
    return [(model, method, sigma_key(sigma))
            for model in cfg["models"] for method in cfg["methods"]
            if runs_for(cfg, method, model) for sigma in cfg["sigmas"]]


def runs_for(cfg: dict, method: str, model: str) -> bool:
    """Whether ``method`` runs for ``model`` (methods.<method>.models; absent: every model)."""
    return model in cfg["methods"][method].get("models", cfg["models"])


def used_pretrainings(cfg: dict) -> list[tuple[str, str]]:
    """(model, pretraining) pairs that some method fine-tunes from."""
    names = sorted({spec["pretraining"] for spec in cfg["methods"].values()
                    if spec["pretraining"] is not None})
    return [(model, name) for model in cfg["models"] for name in names
            if any(spec["pretraining"] == name and runs_for(cfg, method, model)
                   for method, spec in cfg["methods"].items())]


def has_replicates(cfg: dict) -> bool:
    """Whether some recipe is run by several methods (seeds), so the report adds its seed
    table."""
    recipes = [m["recipe"] for m in cfg["methods"].values() if m.get("recipe")]
    return len(recipes) != len(set(recipes))


def reconstruction_figure(cfg: dict, model: str, pretraining: str) -> Path:
    return path(cfg, "reconstructions", model=model, pretraining=pretraining)


def reference_hashes(cfg: dict, vendor: str) -> Path:
    """The md5 of every output of the config's committed run as a CPU of ``vendor`` wrote
    them, for a rerun on such a CPU to be checked against (dmae.ops.check)."""
    return results_dir(cfg) / "reference" / f"{vendor}.json"
