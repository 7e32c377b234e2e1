"""The workflow's rules, described once: the command each runs, the settings it reads, and
the resources it asks for.

workflow/rules/*.smk and the dvc.yaml generator (dmae.ops.dvc.stages) both read ``RULES``, so a
rule reruns under Snakemake for the reasons its DVC stage is stale: what its command computes
with changed (its command line and the library code it runs, as one digest:
dmae.code_identity), one of the config settings it reads (``settings``; ``{model}``,
``{method}``, ``{pretraining}`` and ``{sigma}`` stand for the job's own), or an input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dmae import code_identity, layout

# The runtime settings every training reads (dmae.config adds them to its hyperparameters).
RUNTIME_TRAIN = ("runtime.seed", "runtime.num_workers", "runtime.amp", "runtime.compile",
                 "runtime.cpu_isa")


def processes_of(group: str) -> tuple[str, ...]:
    """The resources that set a training's process count (``processes``), and so its
    effective batch: unlike threads or memory, they change what it computes."""
    return (f"resources.{group}.processes", f"resources.{group}.gpus")


@dataclass(frozen=True)
class Rule:
    # Snakemake's shell command: `dmae <subcommand> ...` (`{params.launcher}`: dmae, or
    # torchrun for a job of several processes); the subcommand names the code it runs.
    command: str
    settings: tuple[str, ...]  # dotted config keys
    resources: str  # the resources.<group> its jobs ask for
    rule_file: str  # under workflow/rules/


RULES = {
    # The config file is not a parameter here: the prepared data is shared by every config
    # with the same dataset settings (common.smk: DMAE_CONFIG).
    "prepare_data": Rule('dmae prepare --config "$DMAE_CONFIG" 2> {log}',
                         ("dataset",), "prepare", "data.smk"),
    "pretrain": Rule("{params.launcher} pretrain --config {params.config} --model"
                     " {wildcards.model} --pretraining {wildcards.pretraining}"
                     " --out {params.outdir} --threads {threads} 2> {log}",
                     ("models.{model}", "pretrainings.{pretraining}", "pretrain",
                      *RUNTIME_TRAIN, *processes_of("pretrain")),
                     "pretrain", "pretrain.smk"),
    "reconstructions": Rule("dmae reconstruct --config {params.config} --checkpoint"
                            " {input.weights} --out {output} --threads {threads} 2> {log}",
                            ("runtime.seed", "runtime.cpu_isa"), "report", "pretrain.smk"),
    "finetune": Rule("{params.launcher} finetune --config {params.config} --model"
                     " {wildcards.model} --method {wildcards.method} --sigma {wildcards.sigma}"
                     " {params.pretrained} --out {params.outdir} --threads {threads} 2> {log}",
                     ("models.{model}", "methods.{method}", "finetune",
                      "finetune_per_sigma.{sigma}", *RUNTIME_TRAIN, *processes_of("finetune")),
                     "finetune", "finetune.smk"),
    "certify_shard": Rule("dmae certify --config {params.config} --checkpoint {input.weights}"
                          " --sigma {wildcards.sigma} --shard {wildcards.shard}/{params.shards}"
                          " --out {output} --threads {threads} 2> {log}",
                          # not runtime.compile: the same computation, faster or not
                          ("certify", "runtime.amp", "runtime.cpu_isa"),
                          "certify", "certify.smk"),
    "merge_certify": Rule("dmae merge-certify --config {params.config} --out {output}"
                          " {input.shards} 2> {log}",
                          ("certify",), "report", "certify.smk"),
    "report": Rule("dmae report --config {params.config} 2> {log}",
                   ("report", "methods", "certify", "dataset.name"), "report", "report.smk"),
}


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


def processes(cfg: dict, rule: str, **job: str) -> int:
    """How many processes a job of ``rule`` runs: resources' processes, else one per GPU."""
    asked = resources(cfg, rule, **job)
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
