"""dvc.yaml, generated from a workflow config, and the step that follows a ``dvc pull``.

    python -m dmae.dvcstages --config config/default.yaml           # (re)write dvc.yaml
    python -m dmae.dvcstages --config config/default.yaml --check   # fail if dvc.yaml is stale
    python -m dmae.dvcstages --touch        # after `dvc pull`: pulled outputs are up to date

dvc.yaml is never edited by hand: its stages come from the same ``dmae.layout`` paths the
Snakemake rules use, one stage per unit of work that DVC can store and fetch on its own:

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
tables and figures are small, kept by git, and declared with ``cache: false`` (CSV tables
and PNG figures as ``plots``, the report's metrics.json as ``metrics``).

``--touch`` is the second half of ``make pull``. DVC does not restore file times and a fresh
clone has no .snakemake/ metadata, so after a pull Snakemake would see checked-out code newer
than the pulled checkpoints and rerun everything. ``--touch`` asks ``dvc status`` which stages
are up to date (their code, config params and inputs match dvc.lock and their outputs are
all present), keeps those whose upstream stages are up to date too, and runs
``snakemake --touch --forceall`` on their targets: Snakemake touches those outputs in DAG
order and records its metadata (params, shell command, inputs) for every job, so a later
config or code change reruns the right jobs. Stages that were not pulled, or that differ from
dvc.lock, are left alone and Snakemake runs them (and what follows) as usual.
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
DEFAULT_OUTPUT = "dvc.yaml"
SRC = PurePosixPath("src/dmae")  # the library, relative to the repository root

HEADER = """\
# GENERATED from {config} and dmae.layout by
#   python -m dmae.dvcstages --config {config}
# Do not edit: regenerate after changing the config's runs, dmae.layout or the workflow rules
# (tests/test_dvc.py fails while this file differs from the generated one).
# One stage per workflow unit (data, pretraining, fine-tuning, certification, report), each
# running the matching Snakemake target. Fetch outputs with `make pull` (docs/dvc.md), not a
# bare `dvc pull`, so that Snakemake sees the pulled files as up to date.
"""

WORKFLOW = ("Snakefile", "workflow/Snakefile", "workflow/rules/common.smk")


def _p(path: Path | str) -> str:
    return PurePosixPath(path).as_posix()


def _deps(rules: list[str], *inputs: Path | str) -> list[str]:
    """The workflow files, the rules' files and library code (dmae.pipeline), then inputs."""
    files = [*WORKFLOW]
    for rule in rules:
        files += [f"workflow/rules/{pipeline.RULES[rule].rule_file}",
                  *(str(SRC / part) for part in pipeline.code_parts(rule))]
    return [*dict.fromkeys(files), *(_p(p) for p in inputs)]


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


def dvc_stages(cfg: dict, configfile: str = DEFAULT_CONFIG, written: dict | None = None) -> dict:
    """The ``stages`` of dvc.yaml for ``cfg``, loaded from ``configfile`` (repo-relative);
    ``written`` is that file's own content (default: read from it)."""
    if written is None:
        written = yaml.safe_load(Path(configfile).read_text())
    stages: dict[str, dict] = {}
    prepared = layout.prepared_dir(cfg)
    manifest = prepared / "manifest.json"
    ckpt = cfg["certify"]["checkpoint"]

    def stage(rules: list[str], targets: list[Path | str], inputs=(), **job) -> dict:
        return {"cmd": _cmd(configfile, [_p(t) for t in targets], rules),
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
        "outs": [{_p(p): {"cache": False}} for p in files
                 if p.suffix not in (".csv", ".png", ".json")],
        "metrics": [{_p(p): {"cache": False}} for p in files if p.suffix == ".json"],
        "plots": [{_p(p): {"cache": False}} for p in files if p.suffix in (".csv", ".png")],
    }
    return stages


def render(cfg: dict, configfile: str = DEFAULT_CONFIG, written: dict | None = None) -> str:
    """The text of dvc.yaml for ``cfg`` (deterministic: same config, same bytes)."""
    body = yaml.safe_dump({"stages": dvc_stages(cfg, configfile, written)}, sort_keys=False,
                          default_flow_style=False, width=1_000)
    return HEADER.format(config=configfile) + body


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


def touch_pulled(dvc_yaml: str | Path = DEFAULT_OUTPUT, *, dry_run: bool = False) -> list[str]:
    """Mark the outputs of up-to-date DVC stages as up to date for Snakemake; return them."""
    dvc_yaml = Path(dvc_yaml)
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    proc = subprocess.run([_tool("dvc"), "status", "--json"], cwd=dvc_yaml.parent or ".",
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status failed:\n{proc.stdout}{proc.stderr}")
    status = json.loads(proc.stdout or "{}")
    # Keys are stage names, or "<dvc.yaml path>:<name>" for stages of other dvc.yaml files.
    changed = {key.rsplit(":", 1)[-1] for key in status}
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
        subprocess.run(cmd, cwd=dvc_yaml.parent or ".", check=True)
    return fresh


# ------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmae.dvcstages",
        description="Write dvc.yaml from a workflow config (one stage per workflow unit, each "
                    "running its Snakemake target), check it, or, after `dvc pull`, mark the "
                    "pulled outputs up to date for Snakemake.")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"workflow config, relative to the repository (default "
                             f"{DEFAULT_CONFIG})")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"dvc.yaml to write or check (default {DEFAULT_OUTPUT})")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 with a diff when the file differs")
    mode.add_argument("--touch", action="store_true",
                      help="after `dvc pull`: `snakemake --touch` the outputs of the stages "
                           "`dvc status` reports up to date (and whose upstream stages are)")
    args = parser.parse_args(argv)

    if args.touch:
        touch_pulled(args.output)
        return 0
    text = render(load(args.config), _p(args.config))
    out = Path(args.output)
    if args.check:
        old = out.read_text() if out.is_file() else ""
        if old == text:
            print(f"{out} is up to date with {args.config}")
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), text.splitlines(keepends=True),
            f"{out} (committed)", f"{out} (generated from {args.config})"))
        print(f"{out} differs from the stages generated from {args.config}; regenerate it: "
              f"python -m dmae.dvcstages --config {args.config}", file=sys.stderr)
        return 1
    if not out.is_file() or out.read_text() != text:
        out.write_text(text)
        print(f"wrote {out} ({text.count(chr(10))} lines) from {args.config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
