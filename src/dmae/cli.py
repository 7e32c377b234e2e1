"""Command-line interface: ``dmae <stage>``, one subcommand per workflow stage.

Every Snakemake rule calls one of these; all the science lives in the library modules.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dmae import __version__
from dmae import config as cfglib

log = logging.getLogger("dmae")



def _setup_logging(log_file: str | None, verbose: bool) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def _pin_cpu_kernels(args: argparse.Namespace) -> None:
    """Every stage computes with the CPU kernels its config pins, set before torch runs."""
    from dmae import reproducibility

    if getattr(args, "config", None) is None:
        return
    isa = reproducibility.cpu_isa(cfglib.load(args.config))
    pinned = reproducibility.pin_cpu_kernels(isa)
    if pinned:
        log.info("CPU kernels pinned (runtime.cpu_isa %s): %s", isa,
                  " ".join(f"{k}={v}" for k, v in pinned.items()))
        reproducibility.check_pinned(isa)


def cmd_validate_config(args: argparse.Namespace) -> None:
    cfg = cfglib.load(args.config)
    print(f"{args.config}: valid ({cfg['dataset']['name']}, models {', '.join(cfg['models'])}, "
          f"methods {', '.join(cfg['methods'])}, sigmas {cfg['sigmas']})")


def cmd_prepare(args: argparse.Namespace) -> None:
    from dmae.data import prepare_dataset

    cfg = cfglib.load(args.config)
    ds = cfg["dataset"]
    data_root = Path(cfg["paths"]["data"])
    out = prepare_dataset(
        ds["name"],
        data_root / "prepared",
        data_root / "raw" / ds["name"],
        val_size=ds["val_size"],
        split_seed=ds.get("split_seed", 0),
        source_dir=_opt_path(ds.get("source_dir")),
        download_url=ds.get("download_url"),
        imagenet_dir=_opt_path(ds.get("imagenet_dir")),
        force=args.force,
    )
    log.info("prepared %s in %s", ds["name"], out)


def cmd_import_checkpoint(args: argparse.Namespace) -> None:
    from dmae import layout
    from dmae.models import import_checkpoint

    cfg = cfglib.load(args.config)
    model_cfg = cfglib.pretrain_settings(cfg, args.model, args.pretraining)[0]
    out = args.out or layout.pretrain_dir(cfg, args.model, args.pretraining) / "last"
    report = import_checkpoint(args.source, out, model_cfg, strict=args.strict)
    for key in ("missing_keys", "unexpected_keys"):
        print(f"{key.replace('_', ' ')}: {', '.join(report[key]) or 'none'}")
    print(f"wrote {Path(out).with_suffix('.safetensors')} ({report['num_tensors']} tensors)")


def _device(cfg: dict) -> str | None:
    """The config's device; None lets the engine pick CUDA when present."""
    device = cfg["runtime"]["device"]
    return None if device == "auto" else device


def _set_threads(cfg: dict, threads: int | None) -> None:
    import torch

    threads = threads or cfg["runtime"].get("threads")
    if threads:
        torch.set_num_threads(threads)


def _fresh_if_changed(out_dir: Path, fingerprint: dict) -> Path:
    """Resume an interrupted run only if it was started with the same settings and inputs.

    The engine resumes from ``out_dir/resume.pt``. That state belongs to another run when the
    settings, the data or the starting checkpoint changed since, or when that run finished
    (being asked again means its outputs are to be recomputed, e.g. after a code change): then
    it goes. Returns the record to mark finished with ``_mark_finished``.
    """
    from dmae.io import read_json, write_json

    record = out_dir / "run.json"
    if record.is_file():
        old = read_json(record)
        if old.get("fingerprint") != fingerprint or old.get("finished"):
            log.info("%s: %s, starting afresh", out_dir, "previous run finished"
                     if old.get("finished") else "settings or inputs changed")
            for name in ("resume.pt", "metrics.csv", "timing.csv"):
                (out_dir / name).unlink(missing_ok=True)
    write_json(record, {"fingerprint": fingerprint, "finished": False})
    return record


def _mark_finished(record: Path) -> None:
    from dmae.io import read_json, write_json

    write_json(record, {**read_json(record), "finished": True})


def _splits(cfg: dict, input_size: int, randaugment: str | None = None):
    from dmae import layout
    from dmae.data import build_transform, load_split, manifest_hash

    prepared = layout.prepared_dir(cfg)
    name = cfg["dataset"]["name"]
    train_set = load_split(prepared, "train", build_transform(name, True, input_size,
                                                               randaugment))
    val_set = load_split(prepared, "val", build_transform(name, False, input_size))
    return train_set, val_set, manifest_hash(prepared)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from dmae import layout
    from dmae.checkpoint import load_checkpoint, load_into, save_checkpoint
    from dmae.io import sha256_file
    from dmae.models import build_pretrain_model
    from dmae.train import TrainHParams, seed_everything, train

    cfg = cfglib.load(args.config)
    _set_threads(cfg, args.threads)
    model_cfg, hp = cfglib.pretrain_settings(cfg, args.model, args.pretraining)
    recipe = cfg["pretrainings"][args.pretraining]
    out = Path(args.out or layout.pretrain_dir(cfg, args.model, args.pretraining))
    seed_everything(hp["seed"])  # the weight initialisation draws from the seeded stream
    model = build_pretrain_model(model_cfg)
    meta = {"model": args.model, "pretraining": args.pretraining, "model_cfg": model_cfg}
    if recipe.get("init"):
        state, _ = load_checkpoint(recipe["init"])
        load_into(model, state, source=recipe["init"])
        meta["init"] = {"path": recipe["init"],
                        "sha256": sha256_file(Path(recipe["init"]).with_suffix(".safetensors"))}
    if not recipe.get("train", True):
        save_checkpoint(out / "last", model.state_dict(), {**meta, "epoch": 0})
        log.info("%s used as it is (no continued pretraining) -> %s", recipe["init"], out)
        return
    train_set, val_set, data_hash = _splits(cfg, model_cfg["img_size"])
    meta["data_manifest_sha256"] = data_hash
    record = _fresh_if_changed(out, {"settings": [model_cfg, hp], "meta": meta})
    train(model, train_set, val_set, TrainHParams.from_dict(hp), out, meta=meta,
          device=_device(cfg))
    _mark_finished(record)


def cmd_finetune(args: argparse.Namespace) -> None:
    from dmae import layout
    from dmae.checkpoint import load_checkpoint
    from dmae.data import read_manifest
    from dmae.io import sha256_file
    from dmae.models import build_classifier, build_linear_probe, load_encoder
    from dmae.train import TrainHParams, seed_everything, train

    cfg = cfglib.load(args.config)
    _set_threads(cfg, args.threads)
    model_cfg, hp = cfglib.finetune_settings(cfg, args.model, args.method, args.sigma)
    randaugment = hp.pop("randaugment", None)
    out = Path(args.out or layout.finetune_dir(cfg, args.model, args.method, args.sigma))
    num_classes = read_manifest(layout.prepared_dir(cfg))["num_classes"]
    seed_everything(hp["seed"])  # the head (and any untrained layer) draws from this stream
    if hp["task"] == "linprobe":
        model = build_linear_probe(model_cfg, num_classes)
    else:
        model = build_classifier(model_cfg, num_classes)
    meta = {"model": args.model, "method": args.method, "sigma": args.sigma,
            "model_cfg": model_cfg, "num_classes": num_classes}
    if args.pretrained:
        state, _ = load_checkpoint(args.pretrained)
        missing, unexpected = load_encoder(model, state, source=str(args.pretrained))
        log.info("encoder from %s (not loaded: %s; unused: %s)", args.pretrained,
                 ", ".join(missing) or "none", ", ".join(unexpected) or "none")
        meta["pretrained"] = {"path": str(args.pretrained), "sha256": sha256_file(
            Path(args.pretrained).with_suffix(".safetensors"))}
    elif cfg["methods"][args.method]["pretraining"] is not None:
        raise ValueError(f"methods.{args.method} fine-tunes a pretrained encoder: "
                         "pass --pretrained <checkpoint>")
    train_set, val_set, data_hash = _splits(cfg, model_cfg["img_size"], randaugment)
    meta["data_manifest_sha256"] = data_hash
    record = _fresh_if_changed(out, {"settings": [model_cfg, hp], "meta": meta})
    train(model, train_set, val_set, TrainHParams.from_dict(hp), out, meta=meta,
          device=_device(cfg))
    _mark_finished(record)


def _certify_indices(cfg: dict, split_size: int) -> list[int]:
    """The images to certify: every ``stride``-th from ``start`` (at most max_images)."""
    c = cfg["certify"]
    indices = list(range(c.get("start", 0), split_size, c["stride"]))
    return indices[: c["max_images"]] if c.get("max_images") else indices


def _load_classifier(checkpoint: Path):
    """A fine-tuned classifier rebuilt from its checkpoint's own metadata."""
    from dmae.checkpoint import load_checkpoint, load_into
    from dmae.models import build_classifier, build_linear_probe

    state, meta = load_checkpoint(checkpoint)
    build = build_linear_probe if meta.get("task") == "linprobe" else build_classifier
    model = build(meta["model_cfg"], meta["num_classes"])
    load_into(model, state, source=str(checkpoint))
    return model, meta


def cmd_certify(args: argparse.Namespace) -> None:
    from dmae import layout
    from dmae.certify import certify_dataset
    from dmae.data import build_transform, load_split
    from dmae.io import sha256_file

    cfg = cfglib.load(args.config)
    _set_threads(cfg, args.threads)
    model, meta = _load_classifier(args.checkpoint)
    split = cfglib.certify_split(cfg)
    images = load_split(layout.prepared_dir(cfg), split,
                        build_transform(cfg["dataset"]["name"], False,
                                        meta["model_cfg"]["img_size"]))
    if images.num_classes != meta["num_classes"]:
        raise ValueError(f"{args.checkpoint}: a {meta['num_classes']}-class model cannot "
                         f"certify {cfg['dataset']['name']} ({images.num_classes} classes)")
    c = cfg["certify"]
    shard = tuple(int(v) for v in args.shard.split("/")) if args.shard else None
    fingerprint = {"checkpoint_sha256": sha256_file(Path(args.checkpoint)
                                                    .with_suffix(".safetensors")),
                   "dataset": cfg["dataset"]["name"], "split": split}
    _drop_stale_partial(args.out, fingerprint)
    status = certify_dataset(
        model, images, _certify_indices(cfg, len(images)), args.sigma,
        n0=c["n0"], n=c["n"], alpha=c["alpha"], batch_size=c["batch_size"],
        seed=c.get("seed", 0), out_tsv=args.out, num_classes=meta["num_classes"],
        device=_device(cfg), shard=shard, config=fingerprint,
    )
    log.info("certified %d/%d images -> %s", status.done, status.total, status.tsv)


def _drop_stale_partial(out_tsv: Path, fingerprint: dict) -> None:
    """Remove a half-done certification made with another model checkpoint.

    The workflow certifies again exactly when the fine-tuned checkpoint changed, so such rows
    can never be completed; any other difference in settings is left for certify_dataset to
    report.
    """
    from dmae.certify.run import meta_path, partial_path
    from dmae.io import read_json

    partial = partial_path(out_tsv)
    if not (partial.exists() and meta_path(partial).is_file()):
        return
    old = read_json(meta_path(partial)).get("settings", {}).get("config", {})
    if old.get("checkpoint_sha256") != fingerprint["checkpoint_sha256"]:
        log.info("%s: made with another checkpoint, starting afresh", partial)
        partial.unlink()
        meta_path(partial).unlink()


def cmd_merge_certify(args: argparse.Namespace) -> None:
    from dmae import layout
    from dmae.certify import merge_shards
    from dmae.data import read_manifest

    cfg = cfglib.load(args.config)
    split_size = read_manifest(layout.prepared_dir(cfg))["counts"][cfglib.certify_split(cfg)]
    out = merge_shards(args.shards, args.out, _certify_indices(cfg, split_size))
    log.info("merged %d shards -> %s", len(args.shards), out)


def cmd_report(args: argparse.Namespace) -> None:
    from dmae.report.build import write_report

    written = write_report(cfglib.load(args.config))
    log.info("report: %d tables and figures, e.g. %s", len(written), written[0])


def cmd_run_info(args: argparse.Namespace) -> None:
    from dmae.report.readme import write_run_info

    path = write_run_info(cfglib.load(args.config))
    log.info("run information -> %s", path)


def cmd_readme_results(args: argparse.Namespace) -> None:
    from dmae.report.readme import results_section, update_readme

    section = results_section(cfglib.load(args.config))
    if args.check:
        text = args.readme.read_text()
        if section.rstrip("\n") not in text:
            raise ValueError(f"{args.readme}: the results section differs from what "
                             f"{args.config}'s committed files give; run dmae readme-results")
        log.info("%s: results section up to date", args.readme)
    elif update_readme(args.readme, section):
        log.info("%s: results section rewritten", args.readme)


def cmd_compare(args: argparse.Namespace) -> int:
    from dmae.report.compare import compare_runs, format_comparison

    comparison = compare_runs(args.run_a, args.run_b)
    print(format_comparison(comparison, show=args.show), end="")
    return 1 if comparison.beyond_uncertainty else 0


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from dmae import layout
    from dmae.checkpoint import load_checkpoint, load_into
    from dmae.data import build_transform, load_split
    from dmae.models import build_pretrain_model
    from dmae.report.figures import reconstruction_grid

    cfg = cfglib.load(args.config)
    _set_threads(cfg, args.threads)
    state, meta = load_checkpoint(args.checkpoint)
    model = build_pretrain_model(meta["model_cfg"])
    load_into(model, state, source=str(args.checkpoint))
    model.eval()
    val = load_split(layout.prepared_dir(cfg), "val",
                     build_transform(cfg["dataset"]["name"], False, meta["model_cfg"]["img_size"]))
    torch.manual_seed(cfg["runtime"]["seed"])  # the same noise and masks on every run
    clean = torch.stack([val[i][0] for i in range(args.images)])
    with torch.inference_mode():
        corrupted, recon, _ = model.reconstruct(clean)
    clean = torch.nn.functional.interpolate(clean, size=corrupted.shape[-2:], mode="bicubic")
    reconstruction_grid(clean, corrupted, recon, args.out)
    log.info("reconstructions -> %s", args.out)


def _opt_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmae",
        description="Denoising Masked Autoencoders (ICLR 2023), reproduced stage by stage.",
    )
    parser.add_argument("--version", action="version", version=f"dmae {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, help="YAML config file (see config/)")
    common.add_argument("--log", help="also write the log to this file")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument("--threads", type=int, help="CPU threads for torch (default: all)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    p = sub.add_parser("validate-config", parents=[common], help="check a config file")
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser(
        "prepare", parents=[common],
        help="verify and prepare the config's dataset under <paths.data>/prepared/<dataset>",
    )
    p.add_argument("--force", action="store_true", help="prepare again even if up to date")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "pretrain", parents=[common],
        help="DMAE/MAE pretraining of one model with one pretraining recipe",
    )
    p.add_argument("--model", required=True, help="a key of the config's models")
    p.add_argument("--pretraining", required=True, help="a key of the config's pretrainings")
    p.add_argument("--out", type=Path, help="run folder (default: the workflow's path)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "finetune", parents=[common],
        help="fine-tune (or probe) one classifier for one method and noise level sigma",
    )
    p.add_argument("--model", required=True, help="a key of the config's models")
    p.add_argument("--method", required=True, help="a key of the config's methods")
    p.add_argument("--sigma", required=True, type=float, help="training noise level")
    p.add_argument("--pretrained", type=Path, help="pretrained checkpoint (.safetensors)")
    p.add_argument("--out", type=Path, help="run folder (default: the workflow's path)")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "certify", parents=[common],
        help="CERTIFY (Cohen et al.) the config's test subset with a fine-tuned classifier",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="fine-tuned .safetensors")
    p.add_argument("--sigma", required=True, type=float, help="smoothing noise level")
    p.add_argument("--shard", help="i/k: certify every k-th image of the subset from i")
    p.add_argument("--out", required=True, type=Path, help="TSV to write (resumes if partial)")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser(
        "merge-certify", parents=[common],
        help="check that certification shards are complete and disjoint, and merge them",
    )
    p.add_argument("shards", nargs="+", type=Path, help="shard TSVs")
    p.add_argument("--out", required=True, type=Path, help="merged TSV")
    p.set_defaults(func=cmd_merge_certify)

    p = sub.add_parser(
        "report", parents=[common],
        help="certified-accuracy tables (CSV, Markdown, LaTeX) and figures for the config",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "run-info", parents=[common],
        help="record a finished run's commit, machine, wall time and memory beside its tables",
    )
    p.set_defaults(func=cmd_run_info)

    p = sub.add_parser(
        "readme-results", parents=[common],
        help="write the README's Results section from the run's committed tables and figures",
    )
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--check", action="store_true", help="fail if the section is out of date")
    p.set_defaults(func=cmd_readme_results)

    p = sub.add_parser(
        "reconstruct", parents=[common],
        help="figure of DMAE reconstructions: clean, noisy + masked input, reconstruction",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="pretrained .safetensors")
    p.add_argument("--images", type=int, default=8, help="validation images to show")
    p.add_argument("--out", required=True, type=Path, help="PNG (or PDF) to write")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser(
        "compare", help="compare two runs' tables cell by cell; exit 1 when a cell differs by "
        "more than its stated uncertainty",
        description="RUN_A and RUN_B are results folders (results/<name>) or their tables/ "
        "folders. Every cell of the certified-accuracy, best-over-sigma and base-classifier "
        "tables is compared: identical, within the stated uncertainty (each value inside the "
        "other's 95%% interval), or beyond it.",
    )
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--show", choices=["all", "different"], default="different",
                   help="cells to list (default: those that are not identical)")
    p.add_argument("--log", help="also write the log to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_compare)

    sub.add_parser(
        "dvc-yaml", add_help=False,
        help="write dvc.yaml from a config (--check: fail if stale; --touch: after dvc pull)",
    )

    p = sub.add_parser(
        "import-checkpoint", parents=[common],
        help="convert the authors' published DMAE .pth into this project's checkpoint format",
        description="Reads a bare MAE-layout state dict (torch.load with weights_only=True), "
        "checks it against the config's model, reports missing and unexpected keys, and writes "
        "safetensors + JSON where the workflow expects the pretrained checkpoint, so "
        "fine-tuning starts from it instead of pretraining.",
    )
    p.add_argument("source", type=Path, help="e.g. dmae_base_sigma_0.25_mask_0.75_1100e.pth")
    p.add_argument("--model", required=True, help="a key of the config's models (e.g. vit_b)")
    p.add_argument("--pretraining", default="dmae", help="pretraining recipe name (dmae)")
    p.add_argument("--out", type=Path, help="checkpoint stem (default: the workflow's path)")
    p.add_argument("--strict", action="store_true", help="fail on missing/unexpected keys")
    p.set_defaults(func=cmd_import_checkpoint)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dvc-yaml"]:  # its own parser: generate or check dvc.yaml, or --touch
        from dmae import dvcstages

        return dvcstages.main(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "log", None), getattr(args, "verbose", False))
    from dmae.data import DataError

    try:
        _pin_cpu_kernels(args)
        return args.func(args) or 0
    except (DataError, FileNotFoundError, ValueError) as err:
        # Expected user errors: one clear line, no traceback.
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
