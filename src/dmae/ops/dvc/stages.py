"""dvc.yaml, generated from a workflow config (written by ``python -m dmae.ops.dvc``).

One stage per unit of work DVC can store and fetch on its own, from the ``dmae.layout`` paths
and ``dmae.pipeline.RULES`` the Snakemake rules use. A stage's command is its Snakemake
target limited to its own rules; it depends on upstream outputs and, as ``params``, on the
config keys and code digests its rules read, so both tools call the same stages stale.
Checkpoints, certifications and prepared data are cached; tables and figures stay in git
(``cache: false``). The default's dvc.yaml sits at the top of the repository, the others' in
``dvc/<config name>/`` (``dvc_file``), committed with their first dvc.lock.
"""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

import yaml

from dmae import code_identity, layout, pipeline
from dmae import config as cfglib
from dmae.config import sigma_key
from dmae.layout import meta_path
from dmae.report import registry

DEFAULT_CONFIG = "config/default.yaml"
# The configs whose pipelines are committed. Others may share outputs with one of these (the
# smoke run shares the prepared Fashion-MNIST, cifar10-adaptive the CIFAR-10 checkpoints), which
# DVC forbids across dvc.yaml files; generate theirs with --output into a scratch checkout.
PIPELINES = (DEFAULT_CONFIG, "config/cifar10.yaml", "config/imagenet.yaml")

HEADER = """\
# GENERATED from {config} and dmae.layout by
#   python -m dmae.ops.dvc --config {config}
# Do not edit: regenerate after changing the config's runs, dmae.layout or the workflow rules
# (tests/test_dvc.py fails while this file differs from the generated one).
# One stage per workflow unit (data, pretraining, fine-tuning, certification, report), each
# running the matching Snakemake target; `dvc pull` fetches their outputs, and Snakemake
# takes what dvc.lock vouches for as done (docs/dvc.md).
"""


def dvc_file(configfile: str) -> str:
    """Where the pipeline of ``configfile`` (repository-relative) lives."""
    if configfile == DEFAULT_CONFIG:
        return "dvc.yaml"
    return f"dvc/{PurePosixPath(configfile).stem}/dvc.yaml"


def _wdir(dvc_yaml: str) -> str | None:
    """The repository seen from the folder of ``dvc_yaml`` (None: it is the repository); an
    absolute path outside the working directory (a scratch file) counts as top-level."""
    path = Path(dvc_yaml)
    if path.is_absolute():
        path = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path.name
    depth = len(PurePosixPath(path).parent.parts)
    return "/".join([".."] * depth) or None

# Vega-Lite templates of the curve plots: .dvc/plots/<name>.json for each of
# dmae.report.registry.curve_names()
TEMPLATE_DIR = ".dvc/plots"
CURVE_TITLES = {"certified_accuracy": "certified accuracy per σ",
                "best_over_sigma": "best certified accuracy over σ"}
# The columns of a fine-tuning run's metrics.csv (dmae.train.state) drawn against the epoch
TRAINING_CURVES = ("train_loss", "val_loss", "val_acc", "val_smoothed_acc")


def posix(path: Path | str) -> str:
    return PurePosixPath(path).as_posix()


def _params(cfg: dict, configfile: str, written: dict, rules: list[str], **job: str
            ) -> list[dict]:
    """DVC params: the settings the rules read (dmae.pipeline) that the config file writes
    (DVC fails on a missing key; a default is not in the file), the keys a setting the file
    leaves null was filled in from (dmae.config.filled_from), and the rules' code digests.
    A section is tracked whole, or by its used keys where it writes some the config drops.
    DVC reads a dotted key, so a key holding a dot (a sigma, "0.25") is tracked by its
    section."""
    keys = []
    filled = cfglib.filled_from(cfg, written)
    for rule in rules:
        for key in map(".".join, pipeline.setting_keys(rule, **job)):
            keys += [source for target, source in filled.items()
                     if target == key or target.startswith(key + ".")]
        for path in pipeline.setting_keys(rule, **job):
            path = path[:next((i for i, p in enumerate(path) if "." in p), len(path))]
            node, used = written, cfg
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
                used = used.get(part) if isinstance(used, dict) else None
            if isinstance(node, dict) and isinstance(used, dict) and node.keys() - used.keys():
                # a section that writes settings the config does not use (another
                # certification method's): each used one, as Snakemake sees them
                keys += [".".join((*path, key)) for key in node if key in used]
            elif node is not None:
                keys.append(".".join(path))
    digests = [f"rules.{rule}" for rule in rules]
    return [{configfile: list(dict.fromkeys(keys))}, {code_identity.IDENTITY_FILE: digests}]


def _cmd(configfile: str, targets: list[str], rules: list[str]) -> str:
    # Targets come first: --configfile and --allowed-rules each take several values.
    return shlex.join(["snakemake", *targets, "--cores", "all", "--configfile", configfile,
                       "--allowed-rules", *rules])


def _sigma_name(sigma: str) -> str:
    return "sigma_" + sigma_key(sigma).replace(".", "_")  # DVC stage names take no "."


def _stage_rules() -> dict[str, list[str]]:
    """Each DVC stage kind and its rules, in the order of the work (dmae.pipeline.RULES)."""
    kinds: dict[str, list[str]] = {}
    for rule, spec in pipeline.RULES.items():
        kinds.setdefault(spec.stage, []).append(rule)
    return kinds


def _dvc_paths(path: Path, kind: str) -> list[Path]:
    """What DVC tracks for a workflow ``path``, a job's input (``kind`` "dep") or output: the
    prepared data as its folder, a checkpoint read as its weights and metadata, a
    certification written with its settings file."""
    if path.name == layout.MANIFEST:
        return [path.parent]
    if kind == "dep" and path.suffix == f".{layout.CHECKPOINT_FORMATS[0]}":
        return layout.checkpoint_files(path.with_suffix(""))
    if kind == "out" and path.suffix == ".tsv":
        return [path, meta_path(path)]
    return [path]


def dvc_stages(cfg: dict, configfile: str = DEFAULT_CONFIG, written: dict | None = None,
               wdir: str | None = None) -> dict:
    """The ``stages`` of dvc.yaml for ``cfg``, loaded from ``configfile`` (repo-relative);
    ``written`` is that file's own content (default: read from it); ``wdir``: the repository,
    relative to the dvc.yaml's folder, when that is not the repository itself.

    A stage is one job of the last rule of its kind (dmae.pipeline.Rule.stage) with the jobs
    of the kind's other rules that it needs (a certification and its shards)."""
    if written is None:
        written = yaml.safe_load(Path(configfile).read_text())
    stages: dict[str, dict] = {}
    for kind, rules in _stage_rules().items():
        head = pipeline.RULES[rules[-1]]
        for job in head.jobs(cfg):
            members = [(rule, member) for rule in rules
                       for member in pipeline.RULES[rule].jobs(cfg)
                       if member.items() >= job.items()]
            made = [path for rule, member in members
                    for path in pipeline.files(pipeline.outputs(cfg, rule, **member))]
            read = [path for rule, member in members
                    for path in pipeline.files(pipeline.inputs(cfg, rule, **member))
                    if path not in made]
            head_outputs = list(pipeline.outputs(cfg, rules[-1], **job).values())
            target = rules[-1] if isinstance(head_outputs[0], list) else head_outputs[0]
            deps = list(dict.fromkeys(p for path in read for p in _dvc_paths(path, "dep")))
            deps.sort(key=lambda path: path != layout.prepared_dir(cfg))  # the data first
            outs = [p for path in made for p in _dvc_paths(path, "out")]
            name = "-".join([kind, *(_sigma_name(value) if key == "sigma" else value
                                     for key, value in job.items())])
            stages[name] = {
                "cmd": _cmd(configfile, [posix(target)], rules),
                **({"wdir": wdir} if wdir else {}),
                **({"deps": [posix(p) for p in deps]} if deps else {}),
                "params": _params(cfg, configfile, written, rules, **job),
                **(_committed(outs) if head.in_git else {"outs": [posix(p) for p in outs]}),
            }
    return stages


def _committed(files: list[Path]) -> dict:
    """Outputs that stay in git (``cache: false``): PNG figures as plots (`dvc plots show`),
    JSON as metrics, the rest (tables, their CSV curves: top-level plots, PDFs) as outs."""
    def kind(path: Path) -> str:
        return {".png": "plots", ".json": "metrics"}.get(path.suffix, "outs")

    declared = {"outs": [], "metrics": [], "plots": []}
    for path in files:
        declared[kind(path)].append({posix(path): {"cache": False}})
    return {key: value for key, value in declared.items() if value}


def dvc_plots(cfg: dict, wdir: str | None = None) -> list[dict]:
    """The top-level ``plots`` of dvc.yaml for ``cfg``; paths relative to the dvc.yaml, which
    is ``wdir`` away from the repository."""
    def rel(path: Path) -> str:
        return posix(PurePosixPath(wdir) / posix(path)) if wdir else posix(path)

    plots: list[dict] = []
    for name, path in zip(registry.curve_names(), registry.curve_paths(cfg), strict=True):
        plots.append({rel(path): {
            "template": name, "x": layout.CURVE_X, "y": layout.CURVE_Y,
            "title": f"{cfg['name']}: {CURVE_TITLES[name]}"
                     + (" (circles: the paper)" if cfg["report"]["reference_dataset"] else ""),
            "x_label": "L2 radius", "y_label": "certified accuracy (%)"}})
    for model, method, sigma in layout.runs(cfg):
        metrics = layout.path(cfg, "finetune_metrics", model=model, method=method, sigma=sigma)
        run = f"{model} {method} σ={sigma_key(sigma)}"
        plots.append({f"{cfg['name']}: fine-tuning {run}": {
            "x": "epoch", "y": {rel(metrics): list(TRAINING_CURVES)}, "template": "simple",
            "title": f"{cfg['name']}: fine-tuning {run}", "x_label": "epoch",
            "y_label": "loss, accuracy"}})
    return plots


def render(cfg: dict, configfile: str = DEFAULT_CONFIG, written: dict | None = None,
           dvc_yaml: str | None = None) -> str:
    """The text of the dvc.yaml at ``dvc_yaml`` (repository-relative; default
    ``dvc_file(configfile)``) for ``cfg``: deterministic, same config, same bytes."""
    wdir = _wdir(dvc_yaml or dvc_file(configfile))
    body = yaml.safe_dump({"stages": dvc_stages(cfg, configfile, written, wdir),
                           "plots": dvc_plots(cfg, wdir)},
                          sort_keys=False, default_flow_style=False, width=1_000,
                          allow_unicode=True)
    return HEADER.format(config=configfile) + body


# ------------------------------------------------------------------------------------- CLI


def committed_pipelines(root: Path | str = ".") -> list[str]:
    """The configs of ``PIPELINES`` whose dvc.yaml is in the repository ``root`` (the
    default's always is): those that ran and were committed, or were written to run them."""
    return [c for c in PIPELINES
            if c == DEFAULT_CONFIG or (Path(root) / dvc_file(c)).is_file()]
