# Shared setup: validate the config against workflow/schemas/config.schema.yaml (the same
# file the CLI uses; an unknown or wrong key stops here, before any job runs), write the
# effective config every `dmae` call reads, and name the artifacts.

import json
import sys
from pathlib import Path

import yaml

import dmae
from dmae import config as dmae_config
from dmae import layout, reproducibility
from dmae.io import atomic_path

dmae_config.validate(config, source="workflow config")

# Jobs call the `dmae` CLI installed beside this snakemake, even when its environment (the
# project's .venv) is not activated; a --use-conda environment still comes first.
os.environ.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), os.getenv("PATH", "")]))

RESULTS = str(layout.results_dir(config))
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
DATASET = config["dataset"]["name"]
PREPARED_MANIFEST = str(layout.prepared_dir(config) / "manifest.json")

MODELS = list(config["models"])
METHODS = list(config["methods"])
SIGMAS = [dmae_config.sigma_key(s) for s in config["sigmas"]]
SHARDS = config["certify"].get("shards", 1)
CKPT = config["certify"].get("checkpoint", "best")
# The CPU kernels every computing job pins (dmae.reproducibility); a change reruns them.
CPU_ISA = reproducibility.cpu_isa(config)


# The CLI reads the same merged config snakemake sees (config files and --config overrides).
# It is a parameter, not an input, so rules rerun on the settings they use (their `settings`
# params), not on any edit of the file. Written when a run starts (after Snakemake has locked
# the outputs) and only when its content changes: a dry run, or a run refused by the lock,
# never rewrites it under the jobs of a run still going.
EFFECTIVE_CONFIG = f"{RESULTS}/config.yaml"


def write_effective_config():
    text = yaml.safe_dump(config, sort_keys=True)
    current = Path(EFFECTIVE_CONFIG)
    if current.is_file() and current.read_text() == text:
        return
    with atomic_path(EFFECTIVE_CONFIG) as tmp:  # never read half-written
        tmp.write_text(text)


onstart:
    write_effective_config()


SRC = Path(dmae.__file__).parent  # the library the `dmae` CLI runs


def code(*parts):
    """Library files a job runs; editing one reruns the jobs that use it, and what follows."""
    files = [SRC / name for name in ("__init__.py", "cli.py", "config.py", "io.py",
                                     "reproducibility.py")]
    files.append(SRC / "schemas" / "config.schema.yaml")
    for part in parts:
        path = SRC / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    # Relative inside the working directory (the usual case: the repository itself), so a
    # moved checkout is not "changed input files"; absolute for a workdir elsewhere.
    here = Path.cwd()
    return [os.path.relpath(f) if f.is_relative_to(here) else str(f) for f in files]


def settings(obj):
    """A parameter holding resolved settings, so a change to them reruns the job."""
    return json.dumps(obj, sort_keys=True)


def res(stage, key, default):
    return config.get("resources", {}).get(stage, {}).get(key, default)


def launcher(stage):
    """`dmae`, or torchrun with one process per GPU when a stage gets more than one."""
    gpus = res(stage, "gpus", 0)
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node={gpus} -m dmae.cli"
    return "dmae"


def pretraining_of(method):
    return config["methods"][method]["pretraining"]


def pretrained_input(wildcards):
    """The pretrained checkpoint a fine-tuning starts from (none for RS)."""
    pre = pretraining_of(wildcards.method)
    if pre is None:
        return []
    return [str(layout.pretrain_dir(config, wildcards.model, pre) / "last.safetensors")]


def pretrain_init(wildcards):
    """The checkpoint a pretraining recipe starts from (e.g. ImageNet DMAE for CIFAR-10)."""
    init = config["pretrainings"][wildcards.pretraining].get("init")
    return [init] if init else []


def pretrained_arg(wildcards, input):
    return f"--pretrained {input.pretrained[0]}" if input.pretrained else ""


ALL_CERTIFICATIONS = [str(layout.certify_tsv(config, *run)) for run in layout.runs(config)]
FINETUNE_METAS = [
    str(layout.finetune_dir(config, *run) / f"{CKPT}.json") for run in layout.runs(config)
]
REPORT_TABLES = [str(p) for p in layout.table_paths(config)]
REPORT_FIGURES = [str(p) for p in layout.figure_paths(config)]
RECONSTRUCTION_FIGURES = [
    str(layout.reconstruction_figure(config, model, pre))
    for model, pre in layout.used_pretrainings(config)
]


CAPTIONS = Path(workflow.current_basedir).parent / "report"


def reported(paths, category):
    """Mark CSV tables and PNG figures for `snakemake --report`, each with its caption."""
    marked = []
    for path in map(Path, paths):
        if path.suffix not in (".csv", ".png"):
            marked.append(str(path))
            continue
        name = "reconstructions" if path.stem.startswith("reconstructions") else path.stem
        caption = name if (CAPTIONS / f"{name}.rst").is_file() else "table"
        marked.append(report(str(path), caption=f"../report/{caption}.rst", category=category))
    return marked
