"""Forward passes the adaptive certification saves against Cohen et al.'s CERTIFY, like for
like, and what it costs in certified accuracy, on trained classifiers at the paper's two
sampling settings.

For each setting (ImageNet-like: n = 10,000, radii 0.5..3.0; CIFAR-like: n = 100,000, radii
0.25..1.0; both n0 = 100, alpha = 0.001 and radius 0 as in the paper's tables) and each sigma
of the config, it certifies the same test images with one fine-tuned classifier of the config
(by default the DMAE + CR one) four ways: ``cohen``; ``cohen + mismatch`` (the authors' code:
an image whose selected class is not its label stops after selection); ``adaptive`` (n_max =
n, the setting's radius grid) and ``adaptive + mismatch`` (``stop_on_mismatch``). It prints
the certified accuracy at every grid radius, the forward passes spent (selection + estimation
samples per image) and the ratios that compare a method without the label to ``cohen`` and
one with it to ``cohen + mismatch``, per sigma and in total, then projects the paper's tables.

The base classifier's votes are recorded once per image and sigma: the n0 selection votes
and the first n estimation votes of the image's noise stream (the one both methods draw from,
``dmae.certify.noise``), kept as the positions of the votes that differ from the selected
class. Every method then runs, by its own code, on a replay of those votes
(``Replay``, a ``dmae.certify.base.Sampler``), and gets exactly what it gets from the
classifier (``--verify`` checks it on a few images). Records are cached under
``--cache`` by checkpoint sha256, seed, n0, noise chunk, sigma and image: a later run reuses
them, records only new images and extends short ones (a CIFAR-like run after an
ImageNet-like one draws samples 10,001..100,000 only). Stop it with Ctrl-C at any time; a
record is written once its image is done.

    .venv/bin/python benchmarks/certify_budget.py --images 500 --jobs 2 --out /tmp/budget
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

import numpy as np
import pandas as pd

from dmae import config as cfglib
from dmae import layout, runtime
from dmae.certify.noise import DEFAULT_NOISE_CHUNK
from dmae.config import sigma_key
from dmae.io import sha256_file

# The paper's sampling settings and table radii (Tables 1 and 3 of the DMAE paper).
SETTINGS = {
    "imagenet-like": {"n0": 100, "n": 10_000, "alpha": 0.001,
                      "radii": [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]},
    "cifar-like": {"n0": 100, "n": 100_000, "alpha": 0.001,
                   "radii": [0.0, 0.25, 0.5, 0.75, 1.0]},
}
# issue 31's targets: (setting, variant) -> fewer forward passes than its like-for-like baseline
TARGET_RATIO = {("imagenet-like", "adaptive"): 3.5, ("cifar-like", "adaptive"): 10.0,
                ("cifar-like", "adaptive + mismatch"): 10.0}
# name -> (certification method, its settings, stop after a mismatched selection)
VARIANTS = {
    "cohen": ("cohen", {}, False),
    "cohen + mismatch": ("cohen", {}, True),
    "adaptive": ("adaptive", {}, False),
    "adaptive + mismatch": ("adaptive", {"stop_on_mismatch": True}, True),
}
# like for like: a variant that uses the label against the baseline that does too
BASELINE = {"adaptive": "cohen", "adaptive + mismatch": "cohen + mismatch"}
COMPARED = {"cohen + mismatch": ["cohen"], "adaptive": ["cohen"],
            "adaptive + mismatch": ["cohen + mismatch", "cohen"]}
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
    parser.add_argument("--data", default=None,
                        help="the prepared dataset folder (default: the config's)")
    parser.add_argument("--split", default=None, choices=["test", "val"],
                        help="the split certified (default: the config's certify.split)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--images", type=int, default=100,
                        help="images per sigma: the first of the config's certify indices")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes, 1 thread each")
    parser.add_argument("--out", default="/tmp/dmae-certify-budget",
                        help="the TSVs of every variant, the checkpoints' snapshots")
    parser.add_argument("--cache", default=None, help="vote records (default: OUT/votes)")
    parser.add_argument("--verify", type=int, default=0, metavar="K",
                        help="also certify the first K images per sigma with the classifier "
                             "itself and check that the replay gives the same certificates")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    return parser.parse_args()


# ----------------------------------------------------------------------------- vote records


def record_path(cache: Path, sha256: str, seed: int, n0: int, chunk: int, sigma: float,
                idx: int) -> Path:
    return (cache / sha256[:16] / f"seed_{seed}-n0_{n0}-chunk_{chunk}"
            / f"sigma_{sigma_key(sigma)}" / f"{idx}.npz")


def load_record(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def save_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **record)
    os.replace(tmp, path)


def record_images(job: dict) -> tuple[float, int, float]:
    """A worker: record (or extend to ``job['n']``) the votes of some images at one sigma."""
    import torch

    from dmae.certify import build_certifier
    from dmae.certify.stage import load_classifier

    torch.set_num_threads(1)
    model, meta = load_classifier(Path(job["checkpoint"]))
    images = load_images(job["cfg"], job["data"], job["split"], meta)
    certifier = build_certifier("cohen", model, meta["num_classes"], job["sigma"],
                                n0=job["n0"], n=job["n"], alpha=0.5,
                                batch_size=job["batch_size"], device="cpu",
                                noise_chunk=job["chunk"])
    start, passes = time.perf_counter(), 0
    for idx, path in job["images"]:
        old = load_record(Path(path))
        x = images[idx][0].to(torch.float32)
        generator = certifier.generator(job["seed"], idx)
        selection = certifier.noise(x, generator)
        if old is None:
            votes = certifier.votes_from(selection, x, job["n0"]).numpy().astype(np.uint8)
            old = {"selection": votes, "ref": np.int64(np.bincount(votes).argmax()),
                   "length": np.int64(0), "pos": np.zeros(0, np.int32),
                   "cls": np.zeros(0, np.uint8)}
            passes += job["n0"]
        else:
            certifier.skip(selection, job["n0"])
        stream = certifier.noise(x, generator)
        length = int(old["length"])
        certifier.skip(stream, length)
        new = certifier.votes_from(stream, x, job["n"] - length).numpy()
        passes += len(new)
        other = np.flatnonzero(new != int(old["ref"]))
        save_record(Path(path), {
            "selection": old["selection"], "ref": old["ref"], "length": np.int64(job["n"]),
            "pos": np.concatenate([old["pos"], (other + length).astype(np.int32)]),
            "cls": np.concatenate([old["cls"], new[other].astype(np.uint8)])})
    return job["sigma"], passes, time.perf_counter() - start


def load_images(cfg: dict, data: str | None, split: str, meta: dict):
    from dmae.data import get_dataset, load_split

    return load_split(Path(data) if data else layout.prepared_dir(cfg), split,
                      get_dataset(cfg["dataset"]["name"]).transform(
                          False, meta["model_cfg"]["img_size"]))


class Replay:
    """The ``Sampler`` a method draws from, replaying a record: the first noise stream is the
    selection's, the second the estimation's, as with the classifier itself."""

    def __init__(self, record: dict, sigma: float, num_classes: int):
        self.sigma, self.record, self.num_classes = sigma, record, num_classes
        self.streams = 0

    def noise(self, x, generator) -> list:
        self.streams += 1
        if self.streams > 2:
            raise RuntimeError("a method drew a third noise stream: not recorded")
        return [self.streams - 1, 0]  # which stream, position

    def sample_counts(self, x, num: int, generator):
        return self.count_from(self.noise(x, generator), x, num)

    def count_from(self, stream: list, x, num: int):
        import torch

        which, start = stream
        stop = start + num
        stream[1] = stop
        if which == 0:
            votes = self.record["selection"]
            if stop > len(votes):
                raise RuntimeError(f"selection samples {start}..{stop} beyond the record")
            counts = np.bincount(votes[start:stop], minlength=self.num_classes)
        else:
            if stop > int(self.record["length"]):
                raise RuntimeError(f"estimation samples {start}..{stop} beyond the record "
                                   f"of {int(self.record['length'])}")
            pos, cls = self.record["pos"], self.record["cls"]
            lo, hi = np.searchsorted(pos, [start, stop])
            counts = np.bincount(cls[lo:hi], minlength=self.num_classes)
            counts[int(self.record["ref"])] += num - (hi - lo)
        return torch.as_tensor(counts, dtype=torch.long)

    def skip(self, stream: list, num: int) -> None:
        stream[1] += num

    @staticmethod
    def selected_votes(selection, counts):
        from dmae.certify.certifier import Certifier

        return Certifier.selected_votes(selection, counts)

    @staticmethod
    def top_two(counts):
        from dmae.certify.certifier import Certifier

        return Certifier.top_two(counts)


def build_method(variant: str, setting: str):
    from dmae.certify.methods import get

    method, options, _ = VARIANTS[variant]
    s = SETTINGS[setting]
    extra = {"radii": s["radii"]} if method == "adaptive" else {}
    return get(method)(n0=s["n0"], n=s["n"], alpha=s["alpha"], **extra, **options)


def certify_variant(variant: str, method, sampler, label: int):
    """The certificate of one variant: cohen + mismatch is cohen's, stopped after selection
    (its n0 samples) when the selected class is not the label, as the authors' code does."""
    from dmae.certify.base import MISMATCH, Certificate

    cert = method.certify(sampler, None, None, label=label)
    if variant == "cohen + mismatch":
        selected = int(np.bincount(sampler.record["selection"]).argmax())
        if selected != label:
            return Certificate(MISMATCH, 0.0, 0, 0.0, 0)
    return cert


# ------------------------------------------------------------------------------ the figures


def cells(rows: pd.DataFrame, radii: list[float]) -> dict[str, float]:
    """Certified accuracy (%) at each radius."""
    return {f"r={r:g}": 100.0 * float(((rows["correct"] == 1) & (rows["radius"] >= r)).mean())
            for r in radii}


def snapshot(checkpoint: Path, folder: Path) -> tuple[Path, str]:
    """A copy of the checkpoint (weights and metadata) that every job certifies, so that a
    workflow rewriting the original meanwhile cannot mix two models into one benchmark, and
    its sha256 (which keys the vote records)."""
    copy = folder / checkpoint.name
    if not copy.is_file():
        if not checkpoint.is_file():
            raise SystemExit(f"{checkpoint}: no fine-tuned classifier; run the workflow first")
        folder.mkdir(parents=True, exist_ok=True)
        for source in (checkpoint, checkpoint.with_suffix(".json")):
            shutil.copyfile(source, folder / source.name)
    return copy, sha256_file(copy)


def record_all(args, cfg, indices, checkpoints, cache, n) -> None:
    """Record every image at every sigma up to n estimation samples, in parallel, the
    first images of every sigma first (so that a stopped run leaves whole images)."""
    jobs = []
    batch = 5 if n > 20_000 else 25
    for start in range(0, len(indices), batch):
        for sigma in cfg["sigmas"]:
            checkpoint, sha256 = checkpoints[sigma]
            todo = []
            for idx in indices[start:start + batch]:
                path = record_path(cache, sha256, cfg["certify"]["seed"], 100,
                                   DEFAULT_NOISE_CHUNK, sigma, idx)
                record = load_record(path)
                if record is None or int(record["length"]) < n:
                    todo.append((idx, str(path)))
            if todo:
                jobs.append({"cfg": cfg, "data": args.data, "split": args.split,
                             "checkpoint": str(checkpoint), "sigma": float(sigma),
                             "seed": cfg["certify"]["seed"], "n0": 100, "n": n,
                             "chunk": DEFAULT_NOISE_CHUNK,
                             "batch_size": cfg["certify"]["batch_size"], "images": todo})
    if not jobs:
        return
    images = sum(len(j["images"]) for j in jobs)
    print(f"recording {images} image x sigma votes up to n = {n:,} in {len(jobs)} jobs, "
          f"{args.jobs} workers", flush=True)
    done, passes, start = 0, 0, time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for job, (_, drawn, _) in zip(jobs, pool.imap(record_images, jobs), strict=True):
            done += len(job["images"])
            passes += drawn
            took = time.perf_counter() - start
            print(f"  {done}/{images} recorded, {passes:,} forward passes, {took:.0f} s "
                  f"({passes / took:,.0f} passes/s)", flush=True)


def verify(args, cfg, indices, checkpoints, records, labels) -> None:
    """Certify the first ``--verify`` images of each sigma with the classifier and check that
    each variant's certificate equals its replay's."""
    import torch

    from dmae.certify import Certifier
    from dmae.certify.stage import load_classifier

    torch.set_num_threads(1)
    checked = 0
    for sigma in cfg["sigmas"]:
        model, meta = load_classifier(checkpoints[sigma][0])
        images = load_images(cfg, args.data, args.split, meta)
        for setting in args.settings:
            for variant in ("cohen", "adaptive", "adaptive + mismatch"):
                method = build_method(variant, setting)  # cohen + mismatch: cohen's, stopped
                certifier = Certifier(method, model, meta["num_classes"], sigma,
                                      batch_size=cfg["certify"]["batch_size"], device="cpu")
                for idx in indices[:args.verify]:
                    x, label = images[idx]
                    direct = certifier.certify(x, certifier.generator(cfg["certify"]["seed"], idx),
                                               label=int(label))
                    replayed = certify_variant(variant, build_method(variant, setting),
                                               Replay(records[sigma][idx], float(sigma),
                                                      meta["num_classes"]), labels[idx])
                    if direct != replayed:
                        raise SystemExit(f"sigma {sigma:g}, {setting}, {variant}, image {idx}: "
                                         f"the classifier gives {direct}, the replay {replayed}")
                    checked += 1
    print(f"verified: {checked} certificates of the classifier equal their replays", flush=True)


def main() -> None:
    args = parse_args()
    cfg = cfglib.load(args.config)
    runtime.setup(cfg, threads=1)  # pins the CPU kernels; the workers inherit the setting
    args.split = args.split or cfg["certify"]["split"]
    cfg["certify"]["split"] = args.split
    model = args.model or next(iter(cfg["models"]))
    from dmae.certify.stage import certify_indices
    from dmae.data import read_manifest

    data_dir = Path(args.data) if args.data else layout.prepared_dir(cfg)
    split_size = read_manifest(data_dir)["counts"][args.split]
    indices = certify_indices(cfg, split_size)[: args.images]
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "votes"
    checkpoints = {}
    for sigma in cfg["sigmas"]:
        folder = (Path(args.checkpoints) / f"sigma_{sigma_key(sigma)}" if args.checkpoints
                  else layout.finetune_dir(cfg, model, args.method, sigma))
        checkpoints[sigma] = snapshot(folder / f"{cfg['certify']['checkpoint']}.safetensors",
                                      out / "checkpoints" / f"sigma_{sigma_key(sigma)}")
    for setting in args.settings:
        if SETTINGS[setting]["n0"] != 100:
            raise SystemExit("the records hold n0 = 100 selection votes")
    n = max(SETTINGS[s]["n"] for s in args.settings)
    print(f"{len(indices)} {args.split} images per sigma; CPU: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
          flush=True)
    record_all(args, cfg, indices, checkpoints, cache, n)

    from dmae.data import load_split

    labels_split = load_split(data_dir, args.split)
    labels = {idx: int(labels_split[idx][1]) for idx in indices}
    records = {sigma: {idx: load_record(record_path(
        cache, checkpoints[sigma][1], cfg["certify"]["seed"], 100,
        DEFAULT_NOISE_CHUNK, sigma, idx)) for idx in indices}
        for sigma in cfg["sigmas"]}
    num_classes = int(read_manifest(data_dir)["num_classes"])
    if args.verify:
        verify(args, cfg, indices, checkpoints, records, labels)

    from dmae.certify.records import HEADER, format_row

    figures = {"images_per_sigma": len(indices), "split": args.split, "model": model,
               "method": args.method, "settings": {}}
    for setting in args.settings:
        s = SETTINGS[setting]
        rows = []
        for sigma in cfg["sigmas"]:
            for variant in VARIANTS:
                method = build_method(variant, setting)
                lines, certs = [], []
                for idx in indices:
                    cert = certify_variant(variant, method,
                                           Replay(records[sigma][idx], float(sigma),
                                                  num_classes), labels[idx])
                    lines.append(format_row(idx, labels[idx], s["n0"], s["n"], cert))
                    certs.append(cert)
                tsv = out / setting / variant.replace(" + ", "+") / f"sigma_{sigma_key(sigma)}.tsv"
                tsv.parent.mkdir(parents=True, exist_ok=True)
                tsv.write_text(HEADER + "".join(lines))
                df = pd.read_csv(tsv, sep="\t")
                passes = int((df["n0"] + df["n_used"]).sum())
                rows.append({"sigma": f"{sigma:g}", "method": variant, **cells(df, s["radii"]),
                             "abstained": int((df["predict"] == -1).sum()),
                             "mismatch": int((df["predict"] == -2).sum()),
                             "passes": passes, "passes/image": passes / len(df)})
        table = pd.DataFrame(rows)
        table["order"] = table["method"].map(list(VARIANTS).index)
        table = table.sort_values(["sigma", "order"]).drop(columns="order")
        print(f"\n## {setting}: n0 = {s['n0']}, n = {s['n']:,}, alpha = {s['alpha']}, "
              f"{len(indices)} images per sigma\n")
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
        cohen = table[table["method"] == "cohen"].set_index("sigma")
        columns = [f"r={r:g}" for r in s["radii"]]
        summary = {}
        for name in VARIANTS:
            if name == "cohen":
                continue
            other = table[table["method"] == name].set_index("sigma")
            diff = (other[columns] - cohen[columns]).abs()
            worst = float(diff.to_numpy().max())
            entry = {"max_cell_difference_pct": worst,
                     "max_cell_difference_images": round(worst * len(indices) / 100)}
            print(f"\n{name}: largest certified-accuracy difference from cohen {worst:.1f} "
                  f"points ({entry['max_cell_difference_images']} images of {len(indices)})")
            for base in COMPARED[name]:
                ref = table[table["method"] == base].set_index("sigma")
                ratio = ref["passes"].sum() / other["passes"].sum()
                per_sigma = (ref["passes"] / other["passes"]).round(2).to_dict()
                goal = TARGET_RATIO.get((setting, name)) if BASELINE.get(name) == base else None
                target = f" (target {goal:g}x)" if goal else ""
                print(f"  {ratio:.2f}x fewer forward passes than {base}{target}; per sigma "
                      f"{per_sigma}")
                entry[f"ratio_vs_{base}"] = ratio
                entry[f"ratio_vs_{base}_per_sigma"] = per_sigma
            summary[name] = entry
        figures["settings"][setting] = {"table": table.to_dict(orient="records"),
                                        "vs": summary}
    print("\n## Projected cost of the paper's tables (forward passes of the base classifier, "
          "from the ratios measured here)\n")
    print("| table | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for table_name, (setting, images, sigmas, models) in PAPER_TABLES.items():
        if setting not in figures["settings"]:
            continue
        s = SETTINGS[setting]
        measured = pd.DataFrame(figures["settings"][setting]["table"])
        total = measured.groupby("method")["passes"].sum()
        cohen = images * sigmas * models * (s["n0"] + s["n"])
        cells_ = [f"{cohen * total[v] / total['cohen']:.2g}" for v in VARIANTS]
        print(f"| {table_name} | " + " | ".join(cells_) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
