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
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    p = sub.add_parser("validate-config", parents=[common], help="check a config file")
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser(
        "prepare", parents=[common],
        help="verify and prepare the config's dataset under <paths.data>/prepared/<dataset>",
    )
    p.add_argument("--force", action="store_true", help="prepare again even if up to date")
    p.set_defaults(func=cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "log", None), getattr(args, "verbose", False))
    from dmae.data import DataError

    try:
        args.func(args)
    except (DataError, FileNotFoundError, ValueError) as err:
        # Expected user errors: one clear line, no traceback.
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
