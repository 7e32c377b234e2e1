"""dvc.yaml, generated from a workflow config, and the step that follows a ``dvc pull``.

    python -m dmae.dvcstages --config config/default.yaml           # (re)write dvc.yaml
    python -m dmae.dvcstages --all --check          # fail if any committed dvc.yaml is stale
    python -m dmae.dvcstages --config config/cifar10.yaml --touch   # after `dvc pull`
    python -m dmae.dvcstages --config config/cifar10.yaml --pull [STAGE ...]    # make pull
    python -m dmae.dvcstages --config config/cifar10.yaml --push [STAGE ...]    # make push

Each config of ``PIPELINES`` has its own dvc.yaml (``dvc_file``): the default's at the top of
the repository, the others' in ``dvc/<config name>/`` with ``wdir`` set back to the
repository, so that every command and path reads the same in all of them and DVC sees one
graph (CIFAR-10's continued pretraining depends on ImageNet's stage). A dvc.yaml is never
edited by hand: its stages come from the same ``dmae.layout`` paths the Snakemake rules use,
one stage per unit of work that DVC can store and fetch on its own:

    prepare                                  data/prepared/<dataset>/           (prepare_data)
    pretrain-<model>-<pretraining>           pretrain/.../last.{safetensors,json} (pretrain)
    reconstructions-<model>-<pretraining>    figures/reconstructions_*.png   (reconstructions)
    finetune-<model>-<method>-sigma_<s>      finetune/.../<ckpt>.{safetensors,json},
                                             metrics.csv                            (finetune)
    certify-<model>-<method>-sigma_<s>       certify/...: shard TSVs and the merged TSV, each
                                             with its .meta.json     (certify_shard + merge)
    report                                   tables/*, figures/*                      (report)

Each stage's command is the matching Snakemake target restricted to the stage's own rules
(``--allowed-rules``), so a DVC stage never recomputes another stage's outputs behind DVC's
back, and both tools run the same `dmae` commands. Dependencies come from the table both
tools read, ``dmae.pipeline.RULES``: the library files the rule's jobs run, the Snakefiles and
the rule file (a changed shell command reruns the stage), the upstream stages' outputs, and,
as DVC ``params``, the config settings the rule reads, so editing an unrelated part of the
config reruns nothing.
Checkpoints, certifications and prepared data are cached outputs (``dvc push``/``dvc pull``);
tables and figures are small, kept by git, and declared with ``cache: false`` (PNG figures as
``plots``, the report's metrics.json as ``metrics``).

The top-level ``plots`` (``dvc_plots``) are what ``dvc plots show`` draws and ``dvc plots
diff`` compares between commits: certified accuracy against radius, one panel per sigma and
one line per method, and best over sigma with the paper's published points, both from the
report's long-format curves (``layout.CURVES``) through the templates in ``.dvc/plots/``; and
each fine-tuning run's training and validation curves against the epoch (its metrics.csv).

``--touch`` is the second half of ``make pull``. DVC does not restore file times and a fresh
clone has no .snakemake/ metadata, so after a pull Snakemake would see checked-out code newer
than the pulled checkpoints and rerun everything. ``--touch`` asks ``dvc status`` which stages
are up to date (their code, config params and inputs match dvc.lock and their outputs are
all present), keeps those whose upstream stages are up to date too, and runs
``snakemake --touch --forceall`` on their targets: Snakemake touches those outputs in DAG
order and records its metadata (params, shell command, inputs) for every job, so a later
config or code change reruns the right jobs. Stages that were not pulled, or that differ from
dvc.lock, are left alone and Snakemake runs them (and what follows) as usual.

``--pull`` and ``--push`` (``make pull``/``make push``) are ``dmae.dvcremote``'s: the remote is
asked first, and nothing changes when it cannot serve.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import yaml

from dmae import config as cfglib
from dmae import layout, pipeline
from dmae.config import load, sigma_key
from dmae.layout import meta_path

DEFAULT_CONFIG = "config/default.yaml"
# The configs whose pipelines are committed. Others may share outputs with one of these (the
# smoke run shares the prepared Fashion-MNIST, cifar10-adaptive the CIFAR-10 checkpoints), which
# DVC forbids across dvc.yaml files; generate theirs with --output into a scratch checkout.
PIPELINES = (DEFAULT_CONFIG, "config/cifar10.yaml", "config/imagenet.yaml")
SRC = PurePosixPath("src/dmae")  # the library, relative to the repository root

HEADER = """\
# GENERATED from {config} and dmae.layout by
#   python -m dmae.dvcstages --config {config}
# Do not edit: regenerate after changing the config's runs, dmae.layout or the workflow rules
# (tests/test_dvc.py fails while this file differs from the generated one).
# One stage per workflow unit (data, pretraining, fine-tuning, certification, report), each
# running the matching Snakemake target. Fetch outputs with `make pull{pull_config}`
# (docs/dvc.md), not a bare `dvc pull`, so that Snakemake sees the pulled files as up to date.
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

WORKFLOW = ("Snakefile", "workflow/Snakefile", "workflow/rules/common.smk")
# Vega-Lite templates of the curve plots: .dvc/plots/<name>.json for each name of layout.CURVES
TEMPLATE_DIR = ".dvc/plots"
CURVE_TITLES = {"certified_accuracy": "certified accuracy per σ",
                "best_over_sigma": "best certified accuracy over σ"}
# The columns of a fine-tuning run's metrics.csv (dmae.train.state) drawn against the epoch
TRAINING_CURVES = ("train_loss", "val_loss", "val_acc", "val_smoothed_acc")


def _p(path: Path | str) -> str:
    return PurePosixPath(path).as_posix()


def _deps(rules: list[str], *inputs: Path | str) -> list[str]:
    """The workflow files, the rules' files and library code (dmae.pipeline), then inputs."""
    files = [*WORKFLOW]
    for rule in rules:
        files += [f"workflow/rules/{pipeline.RULES[rule].rule_file}",
                  *(str(SRC / part) for part in pipeline.code_parts(rule))]
    files = list(dict.fromkeys(files))
    # A file inside a listed folder (one rule lists certify/, another certify/stage.py) is
    # tracked already.
    files = [f for f in files if not any(f.startswith(f"{d}/") for d in files)]
    return [*files, *(_p(p) for p in inputs)]


def _params(cfg: dict, configfile: str, written: dict, rules: list[str], **job: str
            ) -> list[dict]:
    """DVC params: the settings the rules read (dmae.pipeline) that the config file writes
    (DVC fails on a missing key; a default is not in the file), and the keys a setting the file
    leaves null was filled in from (dmae.config.filled_from). DVC reads a dotted key, so a key
    holding a dot (a sigma, "0.25") is tracked by its section."""
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
    return [{configfile: list(dict.fromkeys(keys))}]


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
        return {"cmd": _cmd(configfile, [_p(t) for t in targets], rules),
                **({"wdir": wdir} if wdir else {}),
                "deps": _deps(rules, *inputs),
                "params": _params(cfg, configfile, written, rules, **job)}

    stages["prepare"] = {**stage(["prepare_data"], [manifest]), "outs": [_p(prepared)]}

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
            "outs": [_p(weights), _p(meta)],
        }
    for model, pre in layout.used_pretrainings(cfg):
        figure = layout.reconstruction_figure(cfg, model, pre)
        stages[f"reconstructions-{model}-{pre}"] = {
            **stage(["reconstructions"], [figure], [prepared, *pretrained(model, pre)]),
            "plots": [{_p(figure): {"cache": False}}],
        }

    for model, method, sigma in layout.runs(cfg):
        folder = layout.finetune_dir(cfg, model, method, sigma)
        pre = cfg["methods"][method]["pretraining"]
        outs = [folder / f"{ckpt}.safetensors", folder / f"{ckpt}.json", folder / "metrics.csv"]
        stages[f"finetune-{model}-{method}-{_sigma_name(sigma)}"] = {
            **stage(["finetune"], [outs[0]], [prepared, *(pretrained(model, pre) if pre else [])],
                    model=model, method=method, sigma=sigma),
            "outs": [_p(p) for p in outs],
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
            "outs": [_p(p) for p in outs],
        }

    report_inputs = []
    for model, method, sigma in layout.runs(cfg):
        tsv = layout.certify_tsv(cfg, model, method, sigma)
        report_inputs += [tsv, layout.finetune_dir(cfg, model, method, sigma) / f"{ckpt}.json"]
    files = [*layout.table_paths(cfg), *layout.figure_paths(cfg)]
    stages["report"] = {
        **stage(["report"], ["report"], report_inputs),
        "outs": [{_p(p): {"cache": False}} for p in files if p.suffix not in (".png", ".json")],
        "metrics": [{_p(p): {"cache": False}} for p in files if p.suffix == ".json"],
        # Figures as plots: `dvc plots show` shows them; the CSV curves are top-level plots.
        "plots": [{_p(p): {"cache": False}} for p in files if p.suffix == ".png"],
    }
    return stages


def dvc_plots(cfg: dict, wdir: str | None = None) -> list[dict]:
    """The top-level ``plots`` of dvc.yaml for ``cfg``; paths relative to the dvc.yaml, which
    is ``wdir`` away from the repository."""
    def rel(path: Path) -> str:
        return _p(PurePosixPath(wdir) / _p(path)) if wdir else _p(path)

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
    pull_config = "" if configfile == DEFAULT_CONFIG else f" CONFIG={configfile}"
    return HEADER.format(config=configfile, pull_config=pull_config) + body


# ------------------------------------------------------------------------------ after a pull


def _tool(name: str) -> str:
    """A tool installed beside this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else (shutil.which(name) or name)


def _inside(path: str, outs: list[str]) -> str | None:
    for out in outs:
        if path == out or path.startswith(out.rstrip("/") + "/"):
            return out
    return None


def _paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def stage_graph(stages: dict) -> dict[str, set[str]]:
    """Upstream stages of each stage: those with an output that is (or holds) one of its deps."""
    outs = {name: _paths(s.get("outs")) + _paths(s.get("plots")) + _paths(s.get("metrics"))
            for name, s in stages.items()}
    return {name: {other for other, o in outs.items()
                   if other != name and any(_inside(_p(d), o) for d in _paths(s.get("deps")))}
            for name, s in stages.items()}


def parse_cmd(cmd: str) -> tuple[list[str], str]:
    """(Snakemake targets, config file) of a generated stage command."""
    words = shlex.split(cmd)
    if not words or Path(words[0]).name != "snakemake":
        raise ValueError(f"not a generated snakemake command: {cmd}")
    targets = []
    for word in words[1:]:
        if word.startswith("-"):
            break
        targets.append(word)
    return targets, words[words.index("--configfile") + 1]


def up_to_date_stages(stages: dict, changed: set[str]) -> list[str]:
    """Stages DVC reports unchanged whose upstream stages are all such stages too."""
    graph = stage_graph(stages)
    fresh: dict[str, bool] = {}

    def ok(name: str, seen: tuple[str, ...] = ()) -> bool:
        if name not in fresh:
            if name in seen:
                raise ValueError(f"dvc.yaml has a cycle through stage {name}")
            fresh[name] = name not in changed and all(ok(u, (*seen, name))
                                                      for u in graph[name])
        return fresh[name]

    return [name for name in stages if ok(name)]


def touch_pulled(dvc_yaml: str = "dvc.yaml", root: Path | str = ".", *,
                 dry_run: bool = False) -> list[str]:
    """Mark the outputs of the up-to-date stages of ``dvc_yaml`` (relative to the repository
    ``root``) as up to date for Snakemake; return those stages."""
    stages = yaml.safe_load((Path(root) / dvc_yaml).read_text())["stages"]
    proc = subprocess.run([_tool("dvc"), "status", "--json", dvc_yaml], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status failed:\n{proc.stdout}{proc.stderr}")
    status = json.loads(proc.stdout or "{}")
    # Keys are stage names of the top-level dvc.yaml, or "<dvc.yaml path>:<name>".
    changed = set()
    for key in status:
        path, _, name = key.rpartition(":")
        if _p(path or "dvc.yaml") == _p(dvc_yaml):
            changed.add(name)
    fresh = up_to_date_stages(stages, changed)
    targets: list[str] = []
    configs = set()
    for name in fresh:
        stage_targets, configfile = parse_cmd(stages[name]["cmd"])
        targets += stage_targets
        configs.add(configfile)
    if len(configs) > 1:
        raise ValueError(f"{dvc_yaml}: stages use several config files: {sorted(configs)}")
    print(f"dvc stages up to date ({len(fresh)} of {len(stages)}): "
          f"{', '.join(fresh) or 'none'}", flush=True)
    if targets and not dry_run:
        cmd = [_tool("snakemake"), *targets, "--touch", "--forceall", "--cores", "1",
               "--quiet", "all", "--configfile", configs.pop()]
        subprocess.run(cmd, cwd=root, check=True)
    return fresh


# ------------------------------------------------------------------------------------- CLI


def _write_or_check(configfile: str, out: str, check: bool) -> bool:
    """Write (or, with ``check``, compare) the dvc.yaml of ``configfile`` at ``out``."""
    text = render(load(configfile), _p(configfile), dvc_yaml=_p(out))
    path = Path(out)
    old = path.read_text() if path.is_file() else ""
    if check:
        if old == text:
            print(f"{out} is up to date with {configfile}")
            return True
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), text.splitlines(keepends=True),
            f"{out} (committed)", f"{out} (generated from {configfile})"))
        print(f"{out} differs from the stages generated from {configfile}; regenerate it: "
              f"python -m dmae.dvcstages --config {configfile}", file=sys.stderr)
        return False
    if old != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        print(f"wrote {out} ({text.count(chr(10))} lines) from {configfile}")
    return True


def main(argv: list[str] | None = None, prog: str = "python -m dmae.dvcstages") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write a config's dvc.yaml (one stage per workflow unit, each running its "
                    "Snakemake target), check it, print where it lives, or, after `dvc pull`, "
                    "mark the pulled outputs up to date for Snakemake.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", default=DEFAULT_CONFIG,
                       help=f"workflow config, relative to the repository (default "
                            f"{DEFAULT_CONFIG})")
    which.add_argument("--all", action="store_true",
                       help=f"every committed pipeline: {', '.join(PIPELINES)}")
    parser.add_argument("--output",
                        help="dvc.yaml to write, check or touch, relative to the repository "
                             "(default: the config's own, dvc.yaml or dvc/<name>/dvc.yaml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 with a diff when the file differs")
    mode.add_argument("--touch", action="store_true",
                      help="after `dvc pull`: `snakemake --touch` the outputs of the stages "
                           "`dvc status` reports up to date (and whose upstream stages are)")
    mode.add_argument("--path", action="store_true", help="print where the dvc.yaml lives")
    mode.add_argument("--pull", nargs="*", metavar="STAGE",
                      help="`dvc pull --with-deps` the stages (default: all) from the default "
                           "remote, then --touch; stop first, changing nothing, when the "
                           "remote cannot be reached, refuses the credentials or lacks an output")
    mode.add_argument("--push", nargs="*", metavar="STAGE",
                      help="`dvc push --with-deps` the stages (default: all) to the default "
                           "remote, with the same checks")
    args = parser.parse_args(argv)
    configs = PIPELINES if args.all else (_p(args.config),)
    if args.output and len(configs) > 1:
        parser.error("--output names one file: give --config, not --all")
    files = [args.output or dvc_file(c) for c in configs]

    if args.path:
        print(*files, sep="\n")
        return 0
    if args.touch:
        for out in files:
            touch_pulled(out)
        return 0
    if args.pull is not None or args.push is not None:
        from dmae import dvcremote  # it imports this module

        move, stages = ((dvcremote.pull, args.pull) if args.pull is not None
                        else (dvcremote.push, args.push))
        if stages and len(configs) > 1:
            parser.error("stages belong to one pipeline: give --config, not --all")
        try:
            for configfile, out in zip(configs, files, strict=True):
                move(configfile, stages, dvc_yaml=out)
        except dvcremote.RemoteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    ok = [_write_or_check(c, out, args.check) for c, out in zip(configs, files, strict=True)]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
