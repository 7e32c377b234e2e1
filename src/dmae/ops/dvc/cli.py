"""The DVC command: write or check a config's dvc.yaml and the code digests, print where it
lives, or pull or push its outputs.

    python -m dmae.ops.dvc --config config/default.yaml           # (re)write dvc.yaml
    python -m dmae.ops.dvc --all --check          # fail if a committed file is stale
    python -m dmae.ops.dvc --config config/cifar10.yaml --pull [STAGE ...]    # make pull
    python -m dmae.ops.dvc --config config/cifar10.yaml --push [STAGE ...]    # make push

(`dmae dvc-yaml` is the same command.)
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from dmae import code_identity, pipeline
from dmae.config import load
from dmae.ops.dvc import remote
from dmae.ops.dvc.stages import (
    DEFAULT_CONFIG,
    PIPELINES,
    committed_pipelines,
    dvc_file,
    posix,
    render,
)


def _write_or_check(path: Path, text: str, check: bool, source: str, fix: str) -> bool:
    """Write ``text`` to ``path`` (made from ``source``), or with ``check`` compare them and
    print a diff and the command that fixes it (``fix``)."""
    old = path.read_text() if path.is_file() else ""
    if check:
        if old == text:
            print(f"{path} is up to date with {source}")
            return True
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), text.splitlines(keepends=True),
            f"{path} (committed)", f"{path} (generated from {source})"))
        print(f"{path} differs from what {source} makes; regenerate it: {fix}",
              file=sys.stderr)
        return False
    if old != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        print(f"wrote {path} ({text.count(chr(10))} lines) from {source}")
    return True


def main(argv: list[str] | None = None, prog: str = "python -m dmae.ops.dvc") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write a config's dvc.yaml (one stage per workflow unit, each running its "
                    "Snakemake target) and the code digests both tools read, check them, "
                    "print where the dvc.yaml lives, or pull or push its outputs.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", default=DEFAULT_CONFIG,
                       help=f"workflow config, relative to the repository (default "
                            f"{DEFAULT_CONFIG})")
    which.add_argument("--all", action="store_true",
                       help="every pipeline whose dvc.yaml is committed (of "
                            f"{', '.join(PIPELINES)})")
    parser.add_argument("--output",
                        help="dvc.yaml to write or check, relative to the repository "
                             "(default: the config's own, dvc.yaml or dvc/<name>/dvc.yaml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 with a diff when a file differs")
    mode.add_argument("--path", action="store_true", help="print where the dvc.yaml lives")
    mode.add_argument("--pull", nargs="*", metavar="STAGE",
                      help="`dvc pull --with-deps` the stages (default: all) from the default "
                           "remote; stop first, changing nothing, when the remote cannot be "
                           "reached, refuses the credentials or lacks an output")
    mode.add_argument("--push", nargs="*", metavar="STAGE",
                      help="`dvc push --with-deps` the stages (default: all) to the default "
                           "remote, with the same checks")
    args = parser.parse_args(argv)
    configs = committed_pipelines() if args.all else [posix(args.config)]
    if args.output and len(configs) > 1:
        parser.error("--output names one file: give --config, not --all")
    files = [args.output or dvc_file(c) for c in configs]

    if args.path:
        print(*files, sep="\n")
        return 0
    if args.pull is not None or args.push is not None:
        move, stages = ((remote.pull, args.pull) if args.pull is not None
                        else (remote.push, args.push))
        if stages and len(configs) > 1:
            parser.error("stages belong to one pipeline: give --config, not --all")
        try:
            for configfile, out in zip(configs, files, strict=True):
                move(configfile, stages, dvc_yaml=out)
        except remote.RemoteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    ok = [_write_or_check(Path(code_identity.IDENTITY_FILE),
                          code_identity.render(pipeline.code_digests()), args.check,
                          "the library's code", f"{prog} --all")]
    for configfile, out in zip(configs, files, strict=True):
        text = render(load(configfile), configfile, dvc_yaml=posix(out))
        ok.append(_write_or_check(Path(out), text, args.check, configfile,
                                  f"{prog} --config {configfile}"))
    return 0 if all(ok) else 1
