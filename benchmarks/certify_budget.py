"""Forward passes the adaptive certification saves against Cohen et al.'s CERTIFY, and what it
costs in certified accuracy, on trained classifiers at the paper's two sampling settings.

For each setting (ImageNet-like: n = 10,000, radii 0.5..3.0; CIFAR-like: n = 100,000, radii
0.25..1.0; both n0 = 100, alpha = 0.001 and radius 0 as in the paper's tables), each sigma of
the config and both methods, it certifies the same test images with one fine-tuned classifier
of the config (by default the DMAE + CR one) through ``dmae.certify.certify_dataset``, and
prints the certified accuracy at every grid radius, the forward passes spent (n0 + n_used per
image) and their ratio, per sigma and in total. The adaptive method runs with n_max = n and
the setting's radius grid; with ``--stop-on-mismatch`` also the variant that stops on a
misclassified selection.

The TSVs go to ``--out`` and are resumable: an interrupted run continues where it stopped.

    .venv/bin/python benchmarks/certify_budget.py --images 100 --jobs 2
    .venv/bin/python benchmarks/certify_budget.py --settings imagenet-like --images 500
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import time
from pathlib import Path

import pandas as pd

from dmae import config as cfglib
from dmae import layout, runtime
from dmae.config import sigma_key
from dmae.io import sha256_file

# The paper's sampling settings and table radii (Tables 1 and 3 of the DMAE paper).
SETTINGS = {
    "imagenet-like": {"n0": 100, "n": 10_000, "alpha": 0.001,
                      "radii": [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]},
    "cifar-like": {"n0": 100, "n": 100_000, "alpha": 0.001,
                   "radii": [0.0, 0.25, 0.5, 0.75, 1.0]},
}
TARGET_RATIO = {"imagenet-like": 2.0, "cifar-like": 10.0}
# The paper's certified tables: (setting, test images, sigmas, models certified).
PAPER_TABLES = {
    "Table 1 (ImageNet; ViT-B and ViT-L)": ("imagenet-like", 1_000, 3, 2),
    "Table 3 (CIFAR-10; DMAE ViT-B with and without continued pretraining)":
        ("cifar-like", 10_000, 3, 2),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/default.yaml")
    parser.add_argument("--model", default=None, help="model of the config (default: first)")
    parser.add_argument("--method", default="dmae", help="fine-tuning method of the config")
    parser.add_argument("--checkpoints", default=None,
                        help="folder holding sigma_<s>/<checkpoint>.safetensors (default: the "
                             "config's fine-tuning folder of --model and --method)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--images", type=int, default=100,
                        help="test images per sigma: the first of the config's certify indices")
    parser.add_argument("--stop-on-mismatch", action="store_true",
                        help="also run the adaptive variant that stops on a wrong selection")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes, 1 thread each")
    parser.add_argument("--out", default="results/benchmarks/certify_budget")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args()


def methods(stop_on_mismatch: bool) -> dict[str, tuple[str, dict]]:
    variants = {"cohen": ("cohen", {}), "adaptive": ("adaptive", {})}
    if stop_on_mismatch:
        variants["adaptive+mismatch"] = ("adaptive", {"stop_on_mismatch": True})
    return variants


def certify_one(job: dict) -> tuple[str, float]:
    """A worker: one (setting, sigma, method) certification into its TSV."""
    import torch

    from dmae.certify import certify_dataset
    from dmae.certify.stage import load_classifier
    from dmae.data import get_dataset, load_split

    torch.set_num_threads(1)
    cfg = job["cfg"]
    model, meta = load_classifier(Path(job["checkpoint"]))
    images = load_split(layout.prepared_dir(cfg), cfg["certify"]["split"],
                        get_dataset(cfg["dataset"]["name"]).transform(
                            False, meta["model_cfg"]["img_size"]))
    s = SETTINGS[job["setting"]]
    options = dict(job["options"])
    if job["method"] == "adaptive":
        options["radii"] = s["radii"]
    start = time.perf_counter()
    certify_dataset(model, images, job["indices"], job["sigma"], n0=s["n0"], n=s["n"],
                    alpha=s["alpha"], batch_size=cfg["certify"]["batch_size"],
                    seed=cfg["certify"]["seed"], out_tsv=job["tsv"],
                    num_classes=meta["num_classes"], device="cpu", progress=False,
                    config={"checkpoint_sha256": job["sha256"]}, method=job["method"],
                    method_options=options)
    return job["tsv"], time.perf_counter() - start


def snapshot(checkpoint: Path, folder: Path) -> tuple[Path, str]:
    """A copy of the checkpoint (weights and metadata) that every job certifies, so that a
    workflow rewriting the original meanwhile cannot mix two models into one benchmark, and
    its sha256 (recorded with each TSV: a resume with other weights is refused)."""
    copy = folder / checkpoint.name
    if not copy.is_file():
        if not checkpoint.is_file():
            raise SystemExit(f"{checkpoint}: no fine-tuned classifier; run the workflow first")
        folder.mkdir(parents=True, exist_ok=True)
        for source in (checkpoint, checkpoint.with_suffix(".json")):
            shutil.copyfile(source, folder / source.name)
    return copy, sha256_file(copy)


def cells(df: pd.DataFrame, radii: list[float]) -> dict[str, float]:
    """Certified accuracy (%) at each radius."""
    return {f"r={r:g}": 100.0 * float(((df["correct"] == 1) & (df["radius"] >= r)).mean())
            for r in radii}


def main() -> None:
    args = parse_args()
    cfg = cfglib.load(args.config)
    runtime.setup(cfg, threads=1)  # pins the CPU kernels; the workers inherit the setting
    model = args.model or next(iter(cfg["models"]))
    from dmae.certify.stage import certify_indices
    from dmae.data import read_manifest

    split_size = read_manifest(layout.prepared_dir(cfg))["counts"][cfg["certify"]["split"]]
    indices = certify_indices(cfg, split_size)[: args.images]
    variants = methods(args.stop_on_mismatch)
    jobs = []
    checkpoints = {}
    for sigma in cfg["sigmas"]:
        folder = (Path(args.checkpoints) / f"sigma_{sigma_key(sigma)}" if args.checkpoints
                  else layout.finetune_dir(cfg, model, args.method, sigma))
        checkpoints[sigma] = snapshot(folder / f"{cfg['certify']['checkpoint']}.safetensors",
                                      Path(args.out) / "checkpoints" / f"sigma_{sigma_key(sigma)}")
    for setting in args.settings:
        for sigma in cfg["sigmas"]:
            checkpoint, sha256 = checkpoints[sigma]
            for name, (method, options) in variants.items():
                tsv = Path(args.out) / setting / name / f"sigma_{sigma_key(sigma)}.tsv"
                jobs.append({"cfg": cfg, "setting": setting, "sigma": float(sigma),
                             "method": method, "options": options, "indices": indices,
                             "checkpoint": str(checkpoint), "sha256": sha256, "tsv": str(tsv),
                             "name": name})
    # the longest first, so that the workers finish together
    jobs.sort(key=lambda j: -SETTINGS[j["setting"]]["n"] * (j["method"] == "cohen"))
    print(f"{len(jobs)} certifications of {len(indices)} images each, {args.jobs} workers; "
          f"CPU: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical cores", flush=True)
    seconds = {}
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for tsv, took in pool.imap_unordered(certify_one, jobs):
            seconds[tsv] = took
            print(f"  {tsv}: {took:.0f} s", flush=True)

    figures = {"images_per_sigma": len(indices), "model": model, "method": args.method,
               "settings": {}}
    for setting in args.settings:
        radii = SETTINGS[setting]["radii"]
        rows = []
        for job in (j for j in jobs if j["setting"] == setting):
            df = pd.read_csv(job["tsv"], sep="\t")
            passes = int((df["n0"] + df["n_used"]).sum())
            rows.append({"sigma": f"{job['sigma']:g}", "method": job["name"], **cells(df, radii),
                         "passes": passes, "passes/image": passes / len(df),
                         "seconds": seconds.get(job["tsv"])})
        table = pd.DataFrame(rows).sort_values(["sigma", "method"])
        print(f"\n## {setting}: n0 = {SETTINGS[setting]['n0']}, n = {SETTINGS[setting]['n']:,}, "
              f"alpha = {SETTINGS[setting]['alpha']}, {len(indices)} images per sigma\n")
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
        cohen = table[table["method"] == "cohen"].set_index("sigma")
        summary = {}
        for name in variants:
            if name == "cohen":
                continue
            other = table[table["method"] == name].set_index("sigma")
            columns = [f"r={r:g}" for r in radii]
            diff = (other[columns] - cohen[columns]).abs()
            ratio = cohen["passes"].sum() / other["passes"].sum()
            worst = float(diff.to_numpy().max())
            per_sigma = (cohen["passes"] / other["passes"]).round(2).to_dict()
            print(f"\n{name} vs cohen: {ratio:.1f}x fewer forward passes in total "
                  f"(target {TARGET_RATIO[setting]:g}x; per sigma {per_sigma}); largest "
                  f"certified-accuracy difference {worst:.1f} points "
                  f"({worst * len(indices) / 100:.0f} images)")
            summary[name] = {"ratio": ratio, "ratio_per_sigma": per_sigma,
                             "max_cell_difference_pct": worst}
        figures["settings"][setting] = {"table": table.to_dict(orient="records"),
                                        "vs_cohen": summary}
    print("\n## Projected cost of the paper's tables (forward passes of the base classifier)\n")
    print("| table | cohen | adaptive | ratio (measured here) |")
    print("|---|---:|---:|---:|")
    for table_name, (setting, images, sigmas, models) in PAPER_TABLES.items():
        if setting not in figures["settings"]:
            continue
        s = SETTINGS[setting]
        cohen = images * sigmas * models * (s["n0"] + s["n"])
        ratio = figures["settings"][setting]["vs_cohen"]["adaptive"]["ratio"]
        print(f"| {table_name} | {cohen:.3g} | {cohen / ratio:.3g} | {ratio:.1f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
