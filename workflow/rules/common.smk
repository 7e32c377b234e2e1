# Shared setup: validate the config against the schema the CLI uses (an unknown or wrong key
# stops here, before any job runs) and fill in its defaults, write the effective config every
# `dmae` call reads, and name the artifacts. What each rule runs, reads and asks for is
# dmae.pipeline.RULES, which the dvc.yaml generator reads too.

import functools
import json
import re
import sys
from pathlib import Path

import yaml

import dmae
from dmae import config as dmae_config
from dmae import code_identity, devices, layout, pipeline
from dmae.ops.dvc import sync as dvc_sync
from dmae.io import atomic_path

# Snakemake reads the values inside a `--config key={...}` mapping as text: they are read
# again as YAML types, as in a config file.
config.update(
    dmae_config.deep_merge(config, dmae_config.yaml_typed(workflow.config_settings.config))
)
dmae_config.validate(config, source="workflow config")

# Jobs call the `dmae` CLI installed beside this snakemake, even when its environment (the
# project's .venv) is not activated; a --use-conda environment still comes first.
os.environ.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), os.getenv("PATH", "")]))

# The checkout this code is read from (workflow/rules/../..), or None where Snakemake reads it
# from git: a deployed copy (snakedeploy) uses this workflow as a module from its repository,
# and holds only its config/ and profiles/ beside the Snakefile that names the module.
CHECKOUT = (
    Path(workflow.current_basedir).parents[1]
    if isinstance(workflow.current_basedir, os.PathLike)
    else None
)
# What a rule's conda environment installs (--sdm conda; workflow/envs/dmae.post-deploy.sh):
# this checkout's lock and library, whichever the working directory is
if CHECKOUT is not None:
    os.environ.setdefault("DMAE_CHECKOUT", str(CHECKOUT))

RESULTS = str(layout.results_dir(config))
# The CLI reads the same merged config snakemake sees (config files and --config overrides).
# It is a parameter, not an input, so rules rerun on the settings they read (their `settings`
# param), not on any edit of the file. Written when a run starts (after Snakemake has locked
# the outputs) and only when its content changes: a dry run, or a run refused by the lock,
# never rewrites it under the jobs of a run still going.
EFFECTIVE_CONFIG = f"{RESULTS}/config.yaml"
# Also in the environment, for a job whose output other configs share (the prepared data):
# a params entry would rerun it, and everything after it, whenever another config ran it.
os.environ.update(DMAE_CONFIG=EFFECTIVE_CONFIG)


def write_effective_config():
    text = yaml.safe_dump(config, sort_keys=False)  # the file's order: the report's rows
    current = Path(EFFECTIVE_CONFIG)
    if current.is_file() and current.read_text() == text:
        return
    with atomic_path(EFFECTIVE_CONFIG) as tmp:  # never read half-written
        tmp.write_text(text)


onstart:
    write_effective_config()


# Each rule's digest of what it computes with (its command and the normalised source of the
# library code it runs; dmae.code_identity) is a param of its jobs, and is written to the
# file DVC reads the same digests from: both tools rerun a rule on the same edits, and a
# comment, a docstring or a message reruns nothing.
CODE_IDENTITY = pipeline.code_digests()
if workflow.is_main_process and CHECKOUT is None:  # the params hold the digests all the same
    logger.info(
        f"{code_identity.IDENTITY_FILE} not written: the workflow's code is read "
        f"from {workflow.current_basedir}, not from a checkout"
    )
elif workflow.is_main_process:  # a cluster job's main process did it for it
    try:
        code_identity.write(CHECKOUT / code_identity.IDENTITY_FILE, CODE_IDENTITY)
    except OSError as error:  # a read-only checkout: the params hold the digests all the same
        logger.warning(f"could not update {code_identity.IDENTITY_FILE}: {error}")


# Jobs that run on this machine share its GPUs: unless the command line says how many there
# are (--resources gpu=N), they are the GPUs this process sees, so Snakemake never starts
# more GPU jobs than there are GPUs (each process then takes a free one: dmae.devices). A
# job that asks for more is scaled down to them by Snakemake; with runtime.device cuda it
# then stops at once itself, naming the GPUs it sees.
# (The executor is chosen after this file is read: no node count means local execution.)
if (
    workflow.is_main_process
    and workflow.nodes is None
    and not workflow.output_settings.dryrun  # a dry run shows what each job asks for
    and "gpu" not in workflow.global_resources
):
    workflow.register_resource("gpu", devices.visible_gpu_count())


# Outputs that DVC put in place (dvc pull, dvc checkout) count as done where dvc.lock vouches
# for them (dmae.ops.dvc.sync); a cluster job's main process did it for it.
DVC_PIPELINE = None
if workflow.is_main_process and len(workflow.overwrite_configfiles) <= 1:
    DVC_PIPELINE = dvc_sync.sync_workflow(
        (workflow.overwrite_configfiles or workflow.configfiles)[0],
        workflow.main_snakefile,
        logger,
    )


def remember_dvc_outputs():
    """What this run wrote is Snakemake's own doing, not something DVC put in place."""
    if DVC_PIPELINE is not None:
        try:
            dvc_sync.remember(".", DVC_PIPELINE)
        except Exception as error:  # the next start takes a second look, nothing worse
            logger.warning(f"{DVC_PIPELINE}: could not record its outputs: {error}")


onsuccess:
    remember_dvc_outputs()


onerror:
    remember_dvc_outputs()


def settings(rule):
    """A parameter holding the settings a job reads, so a change to them reruns the job."""
    return lambda w: json.dumps(pipeline.settings(config, rule, **dict(w.items())), sort_keys=True)


def threads_of(rule):
    return lambda w: pipeline.resources(config, rule, **w)["threads"]


def resources_of(rule):
    """The scheduler's resources of a rule's jobs (Snakemake's and the SLURM plugin's names)."""

    def asked(name):
        return lambda w: pipeline.resources(config, rule, **w)[name]

    # One node: a job of several processes is one torchrun --standalone
    return {
        "mem_mb": asked("mem_mb"),
        "runtime": asked("runtime"),
        "gpu": asked("gpus"),
        "nodes": 1,
    }


def launcher(rule):
    """`dmae`, or one torchrun (DDP) for a job of several processes: started once per job,
    in the job's allocation, never once per SLURM task. Its processes are one per GPU the job
    asks for, as the config or the command line (--set-resources <rule>:gpu=N) says."""

    def of_job(wildcards):
        processes = pipeline.processes(config, rule, gpus=gpus_set(rule), **wildcards)
        if processes > 1:
            return f"torchrun --standalone --nproc_per_node={processes} -m dmae.cli"
        return "dmae"

    return of_job


def gpus_set(rule):
    """The GPUs --set-resources gives a rule's jobs (None: the config's). Not the job's
    granted resources: a local run scales those down to the GPUs it sees, and a job must
    then stop (dmae.devices), not train on fewer processes with another effective batch."""
    value = workflow.resource_settings.overwrite_resources.get(rule, {}).get("gpu")
    return None if value is None else int(getattr(value, "value", value))


def inputs_of(rule):
    """A job's inputs (dmae.pipeline), where a pretrained checkpoint is the one
    `dmae import-checkpoint` wrote beside it when there is one: no rule makes that file, so
    it replaces pretraining while it exists (dmae.layout.pretrained_weights)."""

    def of_job(wildcards):
        named = pipeline.inputs(config, rule, **wildcards)
        for init in named.get("init", []):
            check_init(wildcards.pretraining, init)
        return {
            name: (
                [str(layout.pretrained_weights(p)) for p in paths]
                if isinstance(paths, list)
                else str(layout.pretrained_weights(paths))
            )
            for name, paths in named.items()
        }

    return of_job


def check_init(pretraining, init):
    """A pretraining's init (e.g. ImageNet DMAE for CIFAR-10) that another run makes and that
    is not there, neither imported beside it, stops the run here, saying how to make it."""
    made_here = Path(os.path.abspath(init)).is_relative_to(os.path.abspath(RESULTS))
    if not made_here and not layout.pretrained_weights(init).is_file():
        from snakemake.exceptions import WorkflowError

        raise WorkflowError(pipeline.missing_init_help(pretraining, str(init), CONFIG_DIR))


# The repository's configs; a deployed copy's, copied from them, are in its working directory
CONFIG_DIR = (CHECKOUT or Path()) / "config"


def outputs_of(rule):
    """The rule's outputs (dmae.pipeline), tables and figures marked for `snakemake --report`."""
    named = pipeline.RULES[rule].outputs(config)
    return {
        name: reported(paths, name) if name in REPORTED else paths for name, paths in named.items()
    }


# The params a rule's command can name ({params.<name>}), each made for its rule. A rule has
# those its command names, besides the `settings` and `code` of every rule: a change to any
# of them reruns its jobs.
PARAMS = {
    "config": lambda rule: EFFECTIVE_CONFIG,
    "pretrained": lambda rule: pretrained_arg,
    "outdir": lambda rule: lambda wildcards, output: Path(output[0]).parent,
    "launcher": launcher,
    "shards": lambda rule: config["certify"]["shards"],
}


def pretrained_arg(wildcards, input):
    return f"--pretrained {input.pretrained[0]}" if input.pretrained else ""


def params_of(rule):
    named = re.findall(r"\{params\.(\w+)\}", pipeline.RULES[rule].command)
    made = {name: PARAMS[name](rule) for name in named}
    return {**made, "settings": settings(rule), "code": CODE_IDENTITY["rules"][rule]}


def log_of(rule, kind="log"):
    return layout.job_record(config, kind, rule)


def targets():
    """What `snakemake` makes by default: the results committed with the repository (tables
    and figures), and so everything they are made from."""
    return [
        str(path)
        for rule, job in pipeline.jobs(config)
        if pipeline.RULES[rule].in_git
        for path in pipeline.files(pipeline.outputs(config, rule, **job))
    ]


REPORTED = {"tables": "Tables", "figures": "Figures", "figure": "Figures"}  # output -> category
# Captions are read as Snakemake reads this code: from the checkout, or from git
CAPTIONS = workflow.current_basedir.join("../report")


@functools.cache
def has_caption(name):
    return workflow.sourcecache.exists(CAPTIONS.join(f"{name}.rst"))


def reported(paths, name):
    """Mark CSV tables and PNG figures for `snakemake --report`, each with its caption."""
    category = REPORTED[name]
    marked = []
    for path in map(Path, paths if isinstance(paths, list) else [paths]):
        if path.suffix not in (".csv", ".png"):
            marked.append(str(path))
            continue
        caption = path.stem.split("_{")[0].removesuffix("_curves")
        caption = "curves" if path.stem.endswith("_curves") else caption
        caption = caption if has_caption(caption) else "table"
        marked.append(report(str(path), caption=f"../report/{caption}.rst", category=category))
    return marked if isinstance(paths, list) else marked[0]
