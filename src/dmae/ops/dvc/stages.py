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

# Vega-Lite templates of the curve plots: .dvc/plots/<name>.json for each name of layout.CURVES
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
            node = written
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                keys.append(".".join(path))
    digests = [f"rules.{rule}" for rule in rules]
    return [{configfile: list(dict.fromkeys(keys))}, {code_identity.IDENTITY_FILE: digests}]


def _cmd(configfile: str, targets: list[str], rules: list[str]) -> str:
    # Targets come first: --configfile and --allowed-rules each take several values.
    return shlex.join(["snakemake", *targets, "--cores", "all", "--configfile", configfile,
                       "--allowed-rules", *rules])


def _sigma_name(sigma: str) -> str:
    return "sigma_" + sigma_key(sigma).replace(".", "_")  # DVC stage names take no "."


def dvc_stages(cfg: dict, configfile: str = DEFAULT_CONFIG, written: dict | None = None,
               wdir: str | None = None) -> dict:
    """The ``stages`` of dvc.yaml for ``cfg``, loaded from ``configfile`` (repo-relative);
    ``written`` is that file's own content (default: read from it); ``wdir``: the repository,
    relative to the dvc.yaml's folder, when that is not the repository itself."""
    if written is None:
        written = yaml.safe_load(Path(configfile).read_text())
    stages: dict[str, dict] = {}
    prepared = layout.prepared_dir(cfg)
    manifest = prepared / "manifest.json"
    ckpt = cfg["certify"]["checkpoint"]

    def stage(rules: list[str], targets: list[Path | str], inputs=(), **job) -> dict:
        return {"cmd": _cmd(configfile, [posix(t) for t in targets], rules),
                **({"wdir": wdir} if wdir else {}),
                **({"deps": [posix(p) for p in inputs]} if inputs else {}),
                "params": _params(cfg, configfile, written, rules, **job)}

    stages["prepare"] = {**stage(["prepare_data"], [manifest]), "outs": [posix(prepared)]}

    def pretrained(model: str, pretraining: str) -> list[Path]:
        folder = layout.pretrain_dir(cfg, model, pretraining)
        return [folder / "last.safetensors", folder / "last.json"]

    for model, pre in layout.used_pretrainings(cfg):
        init = cfg["pretrainings"][pre]["init"]
        # A starting checkpoint is read as weights + JSON, as dmae.checkpoint names them.
        init_files = [Path(init).with_suffix(s) for s in (".safetensors", ".json")] if init else []
        weights, meta = pretrained(model, pre)
        stages[f"pretrain-{model}-{pre}"] = {
            **stage(["pretrain"], [weights], [prepared, *init_files], model=model,
                    pretraining=pre),
            "outs": [posix(weights), posix(meta)],
        }
    for model, pre in layout.used_pretrainings(cfg):
        figure = layout.reconstruction_figure(cfg, model, pre)
        stages[f"reconstructions-{model}-{pre}"] = {
            **stage(["reconstructions"], [figure], [prepared, *pretrained(model, pre)]),
            "plots": [{posix(figure): {"cache": False}}],
        }

    for model, method, sigma in layout.runs(cfg):
        folder = layout.finetune_dir(cfg, model, method, sigma)
        pre = cfg["methods"][method]["pretraining"]
        outs = [folder / f"{ckpt}.safetensors", folder / f"{ckpt}.json", folder / "metrics.csv"]
        stages[f"finetune-{model}-{method}-{_sigma_name(sigma)}"] = {
            **stage(["finetune"], [outs[0]], [prepared, *(pretrained(model, pre) if pre else [])],
                    model=model, method=method, sigma=sigma),
            "outs": [posix(p) for p in outs],
        }

    for model, method, sigma in layout.runs(cfg):
        folder = layout.finetune_dir(cfg, model, method, sigma)
        tsv = layout.certify_tsv(cfg, model, method, sigma)
        shards = [layout.certify_shard_tsv(cfg, model, method, sigma, i)
                  for i in range(cfg["certify"]["shards"])]
        outs = [p for t in [*shards, tsv] for p in (t, meta_path(t))]
        stages[f"certify-{model}-{method}-{_sigma_name(sigma)}"] = {
            **stage(["certify_shard", "merge_certify"], [tsv],
                    [prepared, folder / f"{ckpt}.safetensors", folder / f"{ckpt}.json"]),
            "outs": [posix(p) for p in outs],
        }

    report_inputs = []
    for model, method, sigma in layout.runs(cfg):
        tsv = layout.certify_tsv(cfg, model, method, sigma)
        report_inputs += [tsv, layout.finetune_dir(cfg, model, method, sigma) / f"{ckpt}.json"]
    files = [*layout.table_paths(cfg), *layout.figure_paths(cfg)]
    stages["report"] = {
        **stage(["report"], ["report"], report_inputs),
        "outs": [{posix(p): {"cache": False}} for p in files if p.suffix not in (".png", ".json")],
        "metrics": [{posix(p): {"cache": False}} for p in files if p.suffix == ".json"],
        # Figures as plots: `dvc plots show` shows them; the CSV curves are top-level plots.
        "plots": [{posix(p): {"cache": False}} for p in files if p.suffix == ".png"],
    }
    return stages


def dvc_plots(cfg: dict, wdir: str | None = None) -> list[dict]:
    """The top-level ``plots`` of dvc.yaml for ``cfg``; paths relative to the dvc.yaml, which
    is ``wdir`` away from the repository."""
    def rel(path: Path) -> str:
        return posix(PurePosixPath(wdir) / posix(path)) if wdir else posix(path)

    plots: list[dict] = []
    for name, path in zip(layout.CURVES, layout.curve_paths(cfg), strict=True):
        plots.append({rel(path): {
            "template": name, "x": layout.CURVE_X, "y": layout.CURVE_Y,
            "title": f"{cfg['name']}: {CURVE_TITLES[name]}"
                     + (" (circles: the paper)" if cfg["report"]["reference_dataset"] else ""),
            "x_label": "L2 radius", "y_label": "certified accuracy (%)"}})
    for model, method, sigma in layout.runs(cfg):
        metrics = layout.finetune_dir(cfg, model, method, sigma) / "metrics.csv"
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
