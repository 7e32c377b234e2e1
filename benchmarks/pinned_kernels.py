"""What pinning torch's CPU kernels to AVX2 (``runtime.cpu_isa: avx2``) costs in speed.

Runs the project's two throughput benchmarks twice each, in fresh processes (the libraries
read the pins once, when they start): with the kernels the CPU would choose (native) and with
``dmae.reproducibility.PINS["avx2"]``; prints both figures and pinned / native. On an AVX2-only
CPU the two are the same code, so the ratio is ~1 there by construction.

    python benchmarks/pinned_kernels.py                 # one thread, as the default's jobs
    python benchmarks/pinned_kernels.py --steps 40 --threads 2

The figures are CPU time per image where the benchmark prints it (train_throughput's
"CPU ms/img"), so a second process on a shared machine moves them less than wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from dmae import reproducibility

HERE = Path(__file__).resolve().parent
TRAIN_ROW = re.compile(r"^(.+?)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)$")


def run(script: str, args: list[str], pinned: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k not in reproducibility.PINS["avx2"]}
    if pinned:
        env.update(reproducibility.PINS["avx2"])
    proc = subprocess.run([sys.executable, str(HERE / script), *args], env=env,
                          capture_output=True, text=True, check=True)
    return proc.stdout


def train_figures(out: str) -> dict[str, float]:
    """{mode: CPU ms per image} from train_throughput.py's table."""
    rows = {}
    for line in out.splitlines():
        match = TRAIN_ROW.match(line.strip())
        if match and not line.startswith("mode"):
            rows[match[1].strip()] = float(match[5])
    return rows


def certify_figure(out: str) -> dict[str, float]:
    """{"certify": ms per noisy pass} from certify_throughput.py."""
    passes = float(re.search(r"^certify\s+([\d.]+)", out, re.M)[1])
    return {"certification, noisy passes (ms per 1,000)": 1e6 / passes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per mode")
    args = ap.parse_args(argv)
    pins = " ".join(f"{k}={v}" for k, v in reproducibility.PINS["avx2"].items())
    print(f"CPU: {reproducibility.machine_isa()}, {os.cpu_count()} cores; {args.threads} "
          f"thread(s); pins: {pins}")
    train_args = ["--threads", str(args.threads), "--steps", str(args.steps), "--no-vit-b"]
    # config/default.yaml's classifier (the figures in benchmarks/README.md were taken with
    # timm's ViT-Ti at 32x32, before certify_throughput.py built the project's own models)
    certify_args = ["--device", "cpu", "--threads", str(args.threads), "--batch", "250",
                    "--n0", "250", "--n", "1000", "--images", "4", "--clock", "process"]
    figures = {}
    for pinned in (False, True):
        figures[pinned] = {**train_figures(run("train_throughput.py", train_args, pinned)),
                           **certify_figure(run("certify_throughput.py", certify_args, pinned))}
    print(f"\n{'CPU ms per image':60s} {'native':>9s} {'pinned':>9s} {'ratio':>7s}")
    for mode, native in figures[False].items():
        pinned = figures[True][mode]
        print(f"{mode:60s} {native:9.3f} {pinned:9.3f} {pinned / native:7.2f}")
    print("ratio: pinned / native CPU time (above 1: pinning costs that factor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
