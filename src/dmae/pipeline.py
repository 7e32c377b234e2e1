"""The workflow's rules, described once: the command each runs, its jobs, what they read and
write, the settings they read and the resources they ask for.

workflow/rules/pipeline.smk and the dvc.yaml generator (dmae.ops.dvc.stages) both read
``RULES``, so a rule reruns under Snakemake for the reasons its DVC stage is stale: what its
command computes with changed (its command line and the library code it runs, as one digest:
dmae.code_identity), one of the config settings it reads (``settings``; ``{model}``,
``{method}``, ``{pretraining}`` and ``{sigma}`` stand for the job's own), or an input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dmae import code_identity, layout
from dmae.report import registry

# The runtime settings every training reads (dmae.config adds them to its hyperparameters).
RUNTIME_TRAIN = ("runtime.seed", "runtime.num_workers", "runtime.amp", "runtime.compile",
                 "runtime.cpu_isa")


def processes_of(group: str) -> tuple[str, ...]:
    """The resources that set a training's process count (``processes``), and so its
    effective batch: unlike threads or memory, they change what it computes."""
    return (f"resources.{group}.processes", f"resources.{group}.gpus")


Job = dict[str, str]  # a job's wildcards: model, method, pretraining, sigma, shard


def _one(cfg: dict) -> list[Job]:
    return [{}]


def _pretrainings(cfg: dict) -> list[Job]:
    return [{"model": model, "pretraining": pre} for model, pre in layout.used_pretrainings(cfg)]


def _runs(cfg: dict) -> list[Job]:
    return [{"model": model, "method": method, "sigma": sigma}
            for model, method, sigma in layout.runs(cfg)]


def _shards(cfg: dict) -> list[Job]:
    return [{**run, "shard": str(shard)}
            for run in _runs(cfg) for shard in range(cfg["certify"]["shards"])]


def _pretrain_inputs(cfg: dict, model: str, pretraining: str) -> dict:
    init = cfg["pretrainings"][pretraining]["init"]
    return {"manifest": layout.manifest(cfg), "init": [Path(init)] if init else []}


def _finetune_inputs(cfg: dict, model: str, method: str, sigma: str) -> dict:
    pre = cfg["methods"][method]["pretraining"]
    return {"manifest": layout.manifest(cfg),
            "pretrained": [layout.pretrain_checkpoint(cfg, model, pre)] if pre else []}


def _report_inputs(cfg: dict) -> dict:
    # Every certification, and the checkpoint metadata of each (base classifier accuracy)
    return {"tsvs": [layout.certify_tsv(cfg, *run) for run in layout.runs(cfg)],
            "checkpoints": [layout.finetuned(cfg, *run, format="json")
                            for run in layout.runs(cfg)]}


def _report_outputs(cfg: dict) -> dict:
    return {"tables": [str(p) for p in registry.table_paths(cfg)],
            "figures": [str(p) for p in registry.figure_paths(cfg)]}


def _checkpoint(cfg: dict, name: str, stem: str, **fields) -> dict:
    return {kind: layout.pattern(cfg, name, stem=stem, format=format, **fields)
            for kind, format in zip(("weights", "meta"), layout.CHECKPOINT_FORMATS, strict=True)}


@dataclass(frozen=True)
class Rule:
    # Snakemake's shell command: `dmae <subcommand> ...` (`{params.launcher}`: dmae, or
    # torchrun for a job of several processes); the subcommand names the code it runs.
    command: str
    settings: tuple[str, ...]  # dotted config keys
    resources: str  # the resources.<group> its jobs ask for
    stage: str  # the DVC stage its jobs belong to (a stage runs a job and what it needs)
    jobs: Callable[[dict], list[Job]]  # every job of a config
    # What a job reads: name -> a path or list of paths (wildcards filled in)
    inputs: Callable[..., dict]
    # What its jobs write: name -> a layout pattern (or list), wildcards left open
    outputs: Callable[[dict], dict]
    in_git: bool = False  # its outputs are small and committed, not cached by DVC
    # A light job on small files: on a cluster it runs where Snakemake runs, not as a job
    local: bool = False


RULES = {
    # The config file is not a parameter here: the prepared data is shared by every config
    # with the same dataset settings (common.smk: DMAE_CONFIG).
    "prepare_data": Rule(
        'dmae prepare --config "$DMAE_CONFIG" 2> {log}',
        ("dataset",), "prepare", "prepare", _one, lambda cfg: {},
        lambda cfg: {"manifest": layout.pattern(cfg, "manifest")}),
    "pretrain": Rule(
        "{params.launcher} pretrain --config {params.config} --model {wildcards.model}"
        " --pretraining {wildcards.pretraining} --out {params.outdir} --threads {threads}"
        " 2> {log}",
        ("models.{model}", "pretrainings.{pretraining}", "pretrain", *RUNTIME_TRAIN,
         *processes_of("pretrain")),
        "pretrain", "pretrain", _pretrainings, _pretrain_inputs,
        lambda cfg: _checkpoint(cfg, "pretrained", layout.PRETRAINED)),
    "reconstructions": Rule(
        "dmae reconstruct --config {params.config} --checkpoint {input.weights} --out"
        " {output} --threads {threads} 2> {log}",
        ("runtime.seed", "runtime.cpu_isa"), "report", "reconstructions", _pretrainings,
        lambda cfg, model, pretraining: {
            "weights": layout.pretrain_checkpoint(cfg, model, pretraining),
            "manifest": layout.manifest(cfg)},
        lambda cfg: {"figure": layout.pattern(cfg, "reconstructions")}, in_git=True),
    "finetune": Rule(
        "{params.launcher} finetune --config {params.config} --model {wildcards.model}"
        " --method {wildcards.method} --sigma {wildcards.sigma} {params.pretrained} --out"
        " {params.outdir} --threads {threads} 2> {log}",
        ("models.{model}", "methods.{method}", "finetune", "finetune_per_sigma.{sigma}",
         *RUNTIME_TRAIN, *processes_of("finetune")),
        "finetune", "finetune", _runs, _finetune_inputs,
        lambda cfg: {**_checkpoint(cfg, "finetuned", cfg["certify"]["checkpoint"]),
                     "metrics": layout.pattern(cfg, "finetune_metrics")}),
    "certify_shard": Rule(
        "dmae certify --config {params.config} --checkpoint {input.weights} --sigma"
        " {wildcards.sigma} --shard {wildcards.shard}/{params.shards} --out {output} --threads"
        " {threads} 2> {log}",
        # not runtime.compile: the same computation, faster or not
        ("certify", "runtime.amp", "runtime.cpu_isa"), "certify", "certify", _shards,
        lambda cfg, model, method, sigma, shard: {
            "weights": layout.finetuned(cfg, model, method, sigma),
            "manifest": layout.manifest(cfg)},
        lambda cfg: {"tsv": layout.pattern(cfg, "certified_shard")}),
    "merge_certify": Rule(
        "dmae merge-certify --config {params.config} --out {output} {input.shards} 2> {log}",
        ("certify",), "report", "certify", _runs,
        lambda cfg, model, method, sigma: {"shards": [
            layout.certify_shard_tsv(cfg, model, method, sigma, shard)
            for shard in range(cfg["certify"]["shards"])]},
        lambda cfg: {"tsv": layout.pattern(cfg, "certified")}, local=True),
    "report": Rule(
        "dmae report --config {params.config} 2> {log}",
        ("report", "methods", "certify", "dataset.name"), "report", "report", _one,
        _report_inputs, _report_outputs, in_git=True, local=True),
}


def jobs(cfg: dict) -> list[tuple[str, Job]]:
    """Every job of the workflow for ``cfg`` as (rule, wildcards), in the order of the work."""
    return [(rule, job) for rule, spec in RULES.items() for job in spec.jobs(cfg)]


def outputs(cfg: dict, rule: str, **job: str) -> dict:
    """What the job ``job`` of ``rule`` writes: name -> path or list of paths."""
    def filled(value):
        return [filled(v) for v in value] if isinstance(value, list) else Path(
            layout.fill(value, **job))
    return {name: filled(value) for name, value in RULES[rule].outputs(cfg).items()}


def inputs(cfg: dict, rule: str, **job: str) -> dict:
    """What the job ``job`` of ``rule`` reads: name -> path or list of paths."""
    return RULES[rule].inputs(cfg, **job)


def files(named: dict) -> list[Path]:
    """The paths of an ``inputs`` or ``outputs`` mapping, in order."""
    return [p for value in named.values() for p in (value if isinstance(value, list) else [value])]


def code_digests(src: Path = code_identity.SRC) -> dict:
    """Each rule's code digest and the library files' (dmae.code_identity.identity)."""
    return code_identity.identity({rule: r.command for rule, r in RULES.items()}, src)


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


def resources(cfg: dict, rule: str, **job: str) -> dict[str, int]:
    """What a job of ``rule`` (``job``: its wildcards) asks for: threads, mem_mb, runtime
    (minutes), gpus, processes. A pretraining that only takes its init as it is (``train:
    false``) copies one checkpoint: a light job (the report's resources), not the training's
    GPUs and hours."""
    if rule == "pretrain" and not cfg["pretrainings"][job["pretraining"]]["train"]:
        return {**cfg["resources"]["report"], "gpus": 0, "processes": 1}
    return cfg["resources"][RULES[rule].resources]


def processes(cfg: dict, rule: str, gpus: int | None = None, **job: str) -> int:
    """How many processes a job of ``rule`` runs: resources' processes, else one per GPU
    (``gpus``: the job's, where the command line sets them, else the config's)."""
    asked = resources(cfg, rule, **job)
    return asked["processes"] or max(1, asked["gpus"] if gpus is None else gpus)


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
