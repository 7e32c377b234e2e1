"""The workflow's rules, described once: the code each runs, the settings it reads, and the
resources it asks for.

workflow/rules/*.smk and the dvc.yaml generator (dmae.dvcstages) both read ``RULES``, so a
rule reruns under Snakemake exactly when its DVC stage is stale: when a library file it runs
changes (``code``), or one of the config settings it reads (``settings``; ``{model}``,
``{method}``, ``{pretraining}`` and ``{sigma}`` stand for the job's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dmae
from dmae import layout

SRC = Path(dmae.__file__).parent  # the library the `dmae` CLI runs

# Library files every `dmae` command imports.
COMMON_CODE = ("__init__.py", "cli.py", "config.py", "io.py", "layout.py", "pipeline.py",
               "reproducibility.py", "runtime.py", "schemas/config.schema.yaml")
# The runtime settings every training reads (dmae.config adds them to its hyperparameters).
RUNTIME_TRAIN = ("runtime.seed", "runtime.num_workers", "runtime.amp", "runtime.compile",
                 "runtime.cpu_isa")


@dataclass(frozen=True)
class Rule:
    code: tuple[str, ...]  # library parts (folders or files of src/dmae) beyond COMMON_CODE
    settings: tuple[str, ...]  # dotted config keys
    resources: str  # the resources.<group> its jobs ask for
    rule_file: str  # under workflow/rules/


RULES = {
    "prepare_data": Rule(("data",), ("dataset",), "prepare", "data.smk"),
    "pretrain": Rule(("data", "models", "train", "checkpoint.py", "precision.py"),
                     ("models.{model}", "pretrainings.{pretraining}", "pretrain", *RUNTIME_TRAIN),
                     "pretrain", "pretrain.smk"),
    "reconstructions": Rule(("data", "models", "certify", "checkpoint.py", "precision.py",
                             "report/__init__.py", "report/reconstructions.py",
                             "report/figures.py", "report/analysis.py"),
                            ("runtime.seed", "runtime.cpu_isa"), "report", "pretrain.smk"),
    "finetune": Rule(("data", "models", "train", "checkpoint.py", "precision.py"),
                     ("models.{model}", "methods.{method}", "finetune",
                      "finetune_per_sigma.{sigma}", *RUNTIME_TRAIN),
                     "finetune", "finetune.smk"),
    "certify_shard": Rule(("data", "models", "certify", "checkpoint.py", "precision.py"),
                          # not runtime.compile: the same computation, faster or not
                          ("certify", "runtime.amp", "runtime.cpu_isa"),
                          "certify", "certify.smk"),
    # No model or torch: the shards' rows and the prepared split's size.
    "merge_certify": Rule(("data", "certify/__init__.py", "certify/methods.py",
                           "certify/records.py", "certify/stage.py"),
                          ("certify",), "report", "certify.smk"),
    "report": Rule(("report", "certify", "precision.py", "reference_results.csv"),
                   ("report", "methods", "certify", "dataset.name"), "report", "report.smk"),
}


def code_parts(rule: str) -> tuple[str, ...]:
    """The library files and folders a rule's jobs run, relative to src/dmae."""
    return COMMON_CODE + RULES[rule].code


def code_files(rule: str) -> list[Path]:
    """The library files a rule's jobs run, folders expanded to their Python files."""
    files = []
    for part in code_parts(rule):
        path = SRC / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def setting_keys(rule: str, **job: str) -> list[tuple[str, ...]]:
    """The config keys a job of ``rule`` reads, each as its path of keys.

    Split before filling in the job's values: a sigma key such as "0.25" holds a dot.
    """
    return [tuple(part.format(**job) for part in key.split("."))
            for key in RULES[rule].settings]


def settings(cfg: dict, rule: str, **job: str) -> dict[str, object]:
    """The values of those keys in ``cfg`` (None where a key is absent), by dotted key."""
    values = {}
    for path in setting_keys(rule, **job):
        node = cfg
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        values[".".join(path)] = node
    return values


def resources(cfg: dict, rule: str) -> dict[str, int]:
    """What a job of ``rule`` asks for: threads, mem_mb, runtime (minutes), gpus, processes."""
    return cfg["resources"][RULES[rule].resources]


def processes(cfg: dict, rule: str) -> int:
    """How many processes a job of ``rule`` runs: resources' processes, else one per GPU."""
    asked = resources(cfg, rule)
    return asked["processes"] or max(1, asked["gpus"])


def missing_init_help(pretraining: str, init: str, config_dir: Path) -> str:
    """How to make the missing checkpoint ``init`` of another run that ``pretraining`` starts
    from (``config_dir``: the repository's configs, to name the one that makes it)."""
    origin = layout.pretrain_origin(init)
    if origin is None:
        return (f"pretrainings.{pretraining}.init: {init}: no such checkpoint (expected "
                "safetensors + JSON, e.g. written by `dmae import-checkpoint --out`)")
    name, model, pre = origin
    config_file = f"config/{name}.yaml"
    if not (config_dir / f"{name}.yaml").is_file():
        config_file = f"<the config with name: {name}>"
    option = "" if pre == "dmae" else f" --pretraining {pre}"  # the CLI's default
    return (
        f"pretrainings.{pretraining}.init: neither {init} nor {layout.IMPORTED}.safetensors "
        f"beside it exists. This run starts from the {model} that run {name} pretrains; make "
        f"it first, either way:\n"
        f"  pretrain it:  snakemake {init} --cores all --configfile {config_file}\n"
        f"  import the authors' published checkpoint:  dmae import-checkpoint <file.pth> "
        f"--config {config_file} --model {model}{option}")
