"""Fingerprint of the pinned CPU kernels: the bytes a short training chain writes here.

``runtime.cpu_isa: avx2`` promises the same bytes on every x86-64 machine. ``make reproduce``
followed by ``make check`` proves it for the whole default (every hash in dvc.lock) in about an
hour; this script checks the same kernels in a minute or two: ``dmae pretrain`` and ``dmae
finetune`` (consistency regularization) of config/default.yaml's model for a few dozen steps,
one thread, each in a fresh process, under the config's pins. It prints the CPU (vendor,
model, widest ISA), the code branch MKL reports and the first 12 hex digits of each
checkpoint's sha256. Compare the two hashes with the table in benchmarks/README.md, taken on
other machines: another hash at the same commit and lock means the pin does not hold here.

    python benchmarks/kernel_fingerprint.py             # the default's pins
    python benchmarks/kernel_fingerprint.py --cpu-isa native
    python benchmarks/kernel_fingerprint.py --env ATEN_CPU_CAPABILITY=avx2 \
        --env MKL_CBWR=COMPATIBLE,STRICT                # other pins, tried as they are given
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from dmae import layout, reproducibility
from dmae.io import sha256_file

REPO = Path(__file__).resolve().parents[1]
DMAE = [sys.executable, "-m", "dmae.cli"]


def cpu_name() -> str:
    return f"{reproducibility.cpuinfo('vendor_id')}, {reproducibility.cpuinfo('model name')}"


def mkl_branch(env: dict) -> str:
    """MKL's own account of the code it runs under ``env`` (MKL_VERBOSE of one SGEMM)."""
    probe = "import torch; torch.ones(64, 64) @ torch.ones(64, 64)"
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "MKL_VERBOSE": "1"},
                         capture_output=True, text=True, check=True).stdout
    isa = re.search(r"for Intel\(R\) 64 architecture (.*?)(?: enabled)?(?: processors)?, Lnx", out)
    cnr = re.search(r"CNR:(\S+)", out)
    return f"{isa[1] if isa else '?'}; CNR {cnr[1] if cnr else '?'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "config" / "default.yaml")
    ap.add_argument("--model", default="vit_s")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps of each stage")
    ap.add_argument("--cpu-isa", default=None, help="runtime.cpu_isa (default: the config's)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="run with these variables instead of a cpu_isa's pins (cpu_isa native)")
    args = ap.parse_args(argv)

    cfg = yaml.safe_load(args.config.read_text())
    tried = dict(item.split("=", 1) for item in args.env)
    if args.cpu_isa or tried:
        cfg["runtime"]["cpu_isa"] = "native" if tried else args.cpu_isa
    isa = cfg["runtime"].get("cpu_isa", "avx2")
    cfg["pretrain"]["max_steps"] = cfg["finetune"]["max_steps"] = args.steps
    # The stages' own processes set a cpu_isa's pins; the variables tried are passed to them.
    env = {k: v for k, v in os.environ.items()
           if k not in reproducibility.PINS["avx2"] and not k.startswith(("MKL_", "ONEDNN_"))}
    env.update(tried)
    pins = tried or reproducibility.PINS[isa]
    print(f"CPU: {cpu_name()} ({reproducibility.machine_isa()})")
    print(f"pins: {' '.join(f'{k}={v}' for k, v in pins.items()) or 'none (native)'}")
    print(f"MKL: {mkl_branch({**env, **pins})}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg["paths"] = {"data": str(work / "data"), "results": str(work / "results")}
        (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))

        def dmae(*stage: str) -> None:
            subprocess.run([*DMAE, *stage, "--config", "cfg.yaml", "--threads", "1"], cwd=work,
                           env=env, check=True, capture_output=True)

        pretraining = next(m["pretraining"] for m in cfg["methods"].values()
                           if m["pretraining"] and m.get("consistency"))
        method = next(n for n, m in cfg["methods"].items() if m["pretraining"] == pretraining)
        dmae("prepare")
        dmae("pretrain", "--model", args.model, "--pretraining", pretraining, "--out", "pre")
        dmae("finetune", "--model", args.model, "--method", method, "--sigma",
             str(cfg["sigmas"][0]), "--pretrained", f"pre/{layout.LAST}", "--out", "ft")
        for label, stem in (("pretrained", work / "pre" / layout.LAST),
                            ("fine-tuned", work / "ft" / layout.BEST)):
            print(f"{label:12s} {sha256_file(layout.checkpoint_files(stem)[0])[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
