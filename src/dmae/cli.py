"""Command-line interface: ``dmae <stage>``, one subcommand per workflow stage.

Every Snakemake rule calls one of these. This module only parses arguments: each command
loads the config once, and calls its stage's function (dmae.<stage>).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dmae import __version__
from dmae import config as cfglib

log = logging.getLogger("dmae")
SIGMA_MISMATCH_HELP = ("smooth at SIGMA although the checkpoint was fine-tuned at another noise "
                       "level (refused otherwise; the results record the fine-tuning sigma)")


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


def cmd_validate_config(args: argparse.Namespace, cfg: dict) -> None:
    print(f"{args.config}: valid ({cfg['dataset']['name']}, models {', '.join(cfg['models'])}, "
          f"methods {', '.join(cfg['methods'])}, sigmas {cfg['sigmas']})")


def cmd_prepare(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.data.stage import prepare

    prepare(cfg, force=args.force)


def cmd_import_checkpoint(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.models.convert import import_pretrained

    report, out = import_pretrained(cfg, args.source, args.model, args.pretraining, args.out,
                                    strict=args.strict)
    for key in ("missing_keys", "unexpected_keys"):
        print(f"{key.replace('_', ' ')}: {', '.join(report[key]) or 'none'}")
    print(f"wrote {out.with_suffix('.safetensors')} ({report['num_tensors']} tensors)")
    if args.out is None:
        print("the workflow fine-tunes from it (and skips pretraining) while it exists; delete "
              "it to pretrain instead")


def cmd_pretrain(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.train.stage import pretrain

    pretrain(cfg, args.model, args.pretraining, args.out)


def cmd_finetune(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.train.stage import finetune

    finetune(cfg, args.model, args.method, args.sigma, args.pretrained, args.out)


def cmd_certify(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.certify.stage import certify

    shard = tuple(int(v) for v in args.shard.split("/")) if args.shard else None
    certify(cfg, args.checkpoint, args.sigma, args.out, shard, args.allow_sigma_mismatch)


def cmd_certify_image(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.certify import image

    cfg = image.with_method(cfg, args.method)
    cert = image.certify_image(cfg, args.checkpoint, args.sigma, args.image, args.index,
                               args.label, args.allow_sigma_mismatch)
    names = image.dataset_classes(cfg)[1]
    print("\n".join(image.describe_certificate(cert, cfg, args.label, names)))


def cmd_predict_image(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.certify import image

    cfg = image.with_method(cfg, args.method)
    prediction = image.predict_image(cfg, args.checkpoint, args.sigma, args.image, args.index,
                                     args.allow_sigma_mismatch)
    names = image.dataset_classes(cfg)[1]
    print("\n".join(image.describe_prediction(prediction, cfg, names)))


def cmd_merge_certify(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.certify.stage import merge

    merge(cfg, args.shards, args.out)


def cmd_report(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.report.build import write_report

    written = write_report(cfg)
    log.info("report: %d tables and figures, e.g. %s", len(written), written[0])


def cmd_reconstruct(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.report.reconstructions import reconstructions

    reconstructions(cfg, args.checkpoint, args.out, args.images)


def cmd_run_info(args: argparse.Namespace, cfg: dict) -> None:
    from dmae.report.run_info import write_run_info

    log.info("run information -> %s", write_run_info(cfg))


def cmd_readme_results(args: argparse.Namespace, cfg: None) -> None:
    from dmae.report.readme import check_readme, update_readme

    if args.check:
        check_readme(args.readme)
        log.info("%s: every results block up to date", args.readme)
    elif update_readme(args.readme):
        log.info("%s: results rewritten", args.readme)
    else:
        log.info("%s: results already up to date", args.readme)


def cmd_compare(args: argparse.Namespace, cfg: None) -> int:
    from dmae.report.compare import compare_runs, format_comparison

    comparison = compare_runs(args.run_a, args.run_b)
    print(format_comparison(comparison, show=args.show), end="")
    return 1 if comparison.beyond_uncertainty else 0


def cmd_check(args: argparse.Namespace, cfg: dict) -> int:
    from dmae.ops import check

    try:
        if args.record:
            print(f"wrote {check.record(args.config)}")
            return 0
        return check.check(args.config)
    except RuntimeError as err:  # git or dvc could not answer
        log.error("%s", err)
        return 2


def cmd_dvc_yaml(argv: list[str]) -> int:
    from dmae.ops.dvc.cli import main

    return main(argv, prog="dmae dvc-yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmae",
        description="Denoising Masked Autoencoders (ICLR 2023), reproduced stage by stage.",
    )
    parser.add_argument("--version", action="version", version=f"dmae {__version__}")
    logs = argparse.ArgumentParser(add_help=False)  # every command logs
    logs.add_argument("--log", help="also write the log to this file")
    logs.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common = argparse.ArgumentParser(add_help=False, parents=[logs])
    common.add_argument("--config", required=True, help="YAML config file (see config/)")
    common.add_argument("--threads", type=int, help="CPU threads for torch (default: all)")
    # Commands that never load torch say so: they skip setting torch's threads (runtime.setup).
    common.set_defaults(uses_torch=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    p = sub.add_parser("validate-config", parents=[common], help="check a config file")
    p.set_defaults(func=cmd_validate_config, uses_torch=False)

    p = sub.add_parser(
        "prepare", parents=[common],
        help="verify and prepare the config's dataset under <paths.data>/prepared/<dataset>",
    )
    p.add_argument("--force", action="store_true", help="prepare again even if up to date")
    p.set_defaults(func=cmd_prepare, uses_torch=False)

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
        help="CERTIFY the config's test subset with a fine-tuned classifier (by the config's "
        "certify.method: cohen is Cohen et al.'s)",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="fine-tuned .safetensors")
    p.add_argument("--sigma", required=True, type=float, help="smoothing noise level")
    p.add_argument("--shard", help="i/k: certify every k-th image of the subset from i")
    p.add_argument("--out", required=True, type=Path, help="TSV to write (resumes if partial)")
    p.add_argument("--allow-sigma-mismatch", action="store_true", help=SIGMA_MISMATCH_HELP)
    p.set_defaults(func=cmd_certify)

    for name, action, func in (("certify-image", "CERTIFY", cmd_certify_image),
                               ("predict-image", "PREDICT", cmd_predict_image)):
        p = sub.add_parser(
            name, parents=[common],
            help=f"{action} one PNG or JPEG image with a fine-tuned classifier, as certify "
            "does a dataset's",
            description=f"{action} of the smoothed classifier on one image file, read as the "
            "config's dataset reads its images, with the config's certification settings. "
            "The noise is that of the dataset run's image INDEX, so a dataset image gives the "
            "same answer as its row of `dmae certify`.",
        )
        p.add_argument("--checkpoint", required=True, type=Path, help="fine-tuned .safetensors")
        p.add_argument("--sigma", required=True, type=float, help="smoothing noise level")
        p.add_argument("--image", required=True, type=Path, help="PNG or JPEG file")
        p.add_argument("--index", type=int, default=0,
                       help="seed the noise as for this image of the dataset run (default 0)")
        if name == "certify-image":
            p.add_argument("--label", type=int,
                           help="the true class: says whether the answer is correct (and is "
                           "what certify.stop_on_mismatch compares with)")
        # The config's validation checks the name, against the methods' registry.
        p.add_argument("--method", help="certification method, a name certify.method takes "
                       "(default: the config's certify.method)")
        p.add_argument("--allow-sigma-mismatch", action="store_true", help=SIGMA_MISMATCH_HELP)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "merge-certify", parents=[common],
        help="check that certification shards are complete and disjoint, and merge them",
    )
    p.add_argument("shards", nargs="+", type=Path, help="shard TSVs")
    p.add_argument("--out", required=True, type=Path, help="merged TSV")
    p.set_defaults(func=cmd_merge_certify, uses_torch=False)

    p = sub.add_parser(
        "report", parents=[common],
        help="certified-accuracy tables (CSV, Markdown, LaTeX) and figures for the config",
    )
    p.set_defaults(func=cmd_report, uses_torch=False)

    p = sub.add_parser(
        "run-info", parents=[common],
        help="record a finished run's commit, machine, wall time and memory beside its tables",
    )
    p.set_defaults(func=cmd_run_info)

    p = sub.add_parser(
        "readme-results", parents=[logs],
        help="rewrite the README's generated results blocks from the committed result files",
        description="Each block opens with a marker naming a config and a view (full: the "
        "Results section; table: one study's table) and is rendered from that run's committed "
        "tables, figures and run_info.json. Run from the repository root.",
    )
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--check", action="store_true", help="fail if a block is out of date")
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
        "compare", parents=[logs],
        help="compare two runs' tables cell by cell; exit 1 when a cell differs by more than "
        "its stated uncertainty",
        description="RUN_A and RUN_B are results folders (results/<name>) or their tables/ "
        "folders. Every cell of the certified-accuracy, best-over-sigma and base-classifier "
        "tables is compared: identical, within the stated uncertainty (each value inside the "
        "other's 95% interval), or beyond it.",
    )
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--show", choices=["all", "different"], default="different",
                   help="cells to list (default: those that are not identical)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "check", parents=[common],
        help="after a run: compare its tables with the committed ones and its outputs' bytes "
        "with the reference of this CPU's vendor; exit 1 when they differ (make check)",
        description="Every table cell against the tables committed at HEAD (as dmae compare), "
        "then, for a config whose DVC pipeline is committed, every output's md5 against "
        "dvc.lock where the committed run was made on a CPU of this machine's vendor, else "
        "against results/<name>/reference/<vendor>.json.",
    )
    p.add_argument("--record", action="store_true",
                   help="write this run's output hashes as its CPU vendor's reference instead")
    p.set_defaults(func=cmd_check, uses_torch=False)

    sub.add_parser(
        "dvc-yaml", add_help=False,
        help="write dvc.yaml from a config (--check: fail if stale; --pull, --push)",
    )

    p = sub.add_parser(
        "import-checkpoint", parents=[common],
        help="convert the authors' published DMAE .pth into this project's checkpoint format",
        description="Reads a bare MAE-layout state dict (torch.load with weights_only=True), "
        "checks it against the config's model, reports missing and unexpected keys, and writes "
        "safetensors + JSON as <results>/<name>/pretrain/<model>/<pretraining>/imported.*. "
        "While that file exists the workflow starts from it (fine-tuning, reconstructions, "
        "and another config's pretraining whose init is this run's last.safetensors, e.g. "
        "CIFAR-10 from ImageNet) and never plans this pretraining; delete it to pretrain.",
    )
    p.add_argument("source", type=Path, help="e.g. dmae_base_sigma_0.25_mask_0.75_1100e.pth")
    p.add_argument("--model", required=True, help="a key of the config's models (e.g. vit_b)")
    p.add_argument("--pretraining", default="dmae", help="pretraining recipe name (dmae)")
    p.add_argument("--out", type=Path, help="checkpoint stem (default: the imported path the "
                   "workflow uses; elsewhere, the workflow does not see it)")
    p.add_argument("--strict", action="store_true", help="fail on missing/unexpected keys")
    p.set_defaults(func=cmd_import_checkpoint)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dvc-yaml"]:  # its own parser: write or check dvc.yaml, pull, push
        return cmd_dvc_yaml(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.log, args.verbose)
    try:
        cfg = None
        if getattr(args, "config", None) is not None:
            from dmae import runtime

            cfg = cfglib.load(args.config)
            runtime.setup(cfg, args.threads, args.uses_torch)  # before any stage computes
        return args.func(args, cfg) or 0
    except _expected_errors() as err:  # evaluated only when something was raised
        log.error("%s", err)
        return 2


def _expected_errors() -> tuple[type[Exception], ...]:
    """Failures reported in one clear line, without a traceback. The library's own errors
    count where their modules were imported (elsewhere nothing raised
    them): importing them up front would load torch and timm, seconds, for every command."""
    errors = [FileNotFoundError, ValueError]
    for module, name in (("dmae.data.errors", "DataError"),
                         ("dmae.devices", "DeviceError"),
                         ("dmae.train.engine", "TrainingDivergedError"),
                         ("dmae.train.engine", "ResumeError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


if __name__ == "__main__":
    sys.exit(main())
