"""GPU-hours of every job of a paper config, from its work and a GPU's throughput.

The jobs are the workflow's own (``dmae.pipeline.jobs``). A job's work is counted from the
config: images x epochs for a training (the training split less ``val_size``), test images x
(n0 + n) forward passes for a certification shard. A GPU's throughput is the FLOPs one image
costs (a ViT's matrix products and attention, below), at a fraction of the GPU's bf16 peak:
35% of an H100's 989 TFLOP/s unless ``--tflops`` says otherwise. Once ``benchmarks/gpu_check.sh``
has measured a GPU, pass its figures instead (``--rate kind=images/s``, e.g.
``--rate pretrain/vit_base_patch16=5200``). Decoding is not counted: an 8-GPU ImageNet job
decodes about 24,000 images/s (README: On a GPU cluster), which bounds ViT-B pretraining.

    python benchmarks/gpu_budget.py --config config/imagenet.yaml
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from dmae import config as cfglib
from dmae import pipeline
from dmae.certify.stage import certify_indices
from dmae.data import get_dataset
from dmae.models.presets import PRESETS

# ILSVRC2012's splits, read from a folder by the imagenet dataset (its size is not a setting)
SPLIT_SIZES = {"imagenet": (1_281_167, 50_000)}
H100_BF16_TFLOPS = 989.0
EFFICIENCY = 0.35  # the fraction of peak a ViT step reaches (an estimate until measured)


def forward_gflops(arch: dict, tokens: int, embed_dim: int | None = None,
                   depth: int | None = None) -> float:
    """One image's forward pass through ``depth`` transformer blocks of width ``embed_dim``
    (default: the encoder's) over ``tokens`` tokens: per token and block, 24 d^2 multiply-adds
    x 2 in the projections and MLP (ratio 4) and 4 T d in attention."""
    d = embed_dim or arch["embed_dim"]
    return (depth or arch["depth"]) * tokens * (24 * d * d + 4 * tokens * d) / 1e9


def patches(arch: dict) -> int:
    return (arch["img_size"] // arch["patch_size"]) ** 2


def image_gflops(cfg: dict, rule: str, job: dict) -> float:
    """The FLOPs (G) one training image or one certification pass costs in ``job``."""
    arch = {**PRESETS[cfg["models"][job["model"]]["arch"]], **cfg["models"][job["model"]]}
    if rule == "pretrain":
        recipe = cfg["pretrainings"][job["pretraining"]]
        visible = round(patches(arch) * (1 - recipe["mask_ratio"])) + 1
        forward = forward_gflops(arch, visible) + forward_gflops(
            arch, patches(arch) + 1, arch["decoder_embed_dim"], arch["decoder_depth"])
        return 3 * forward  # forward and backward
    forward = forward_gflops(arch, patches(arch) + 1)
    if rule == "certify_shard":
        return forward
    method = cfg["methods"][job["method"]]
    if method.get("linprobe"):
        return forward  # a frozen encoder: no backward through it
    copies = cfg["finetune"]["consistency"]["m"] if method["consistency"] else 1
    return 3 * forward * copies


def job_work(cfg: dict, rule: str, job: dict) -> tuple[float, str]:
    """(images or passes, what they are) of a GPU job; (0, "") for the others."""
    name = cfg["dataset"]["name"]
    spec = get_dataset(name)
    train, test = SPLIT_SIZES.get(name, (getattr(spec, "train_count", 0),
                                         getattr(spec, "test_count", 0)))
    train -= cfg["dataset"]["val_size"]
    if rule == "pretrain":
        if not cfg["pretrainings"][job["pretraining"]]["train"]:
            return 0.0, ""
        epochs = cfglib.pretrain_settings(cfg, job["model"], job["pretraining"])[1]["epochs"]
        return float(epochs * train), f"{epochs} epochs"
    if rule == "finetune":
        hp = cfglib.finetune_settings(cfg, job["model"], job["method"], float(job["sigma"]))[1]
        return float(hp["epochs"] * train), f"{hp['epochs']} epochs"
    if rule == "certify_shard":
        c = cfg["certify"]
        images = len(certify_indices(cfg, test)) / c["shards"]
        return images * (c["n0"] + c["n"]), "forward passes"
    return 0.0, ""


def gpu_hours(cfg: dict, tflops: float, rates: dict[str, float]) -> dict[str, float]:
    """GPU-hours by rule and model ("<rule> <model>")."""
    hours: dict[str, float] = defaultdict(float)
    for rule, job in pipeline.jobs(cfg):
        work, _ = job_work(cfg, rule, job)
        if not work:
            continue
        arch = cfg["models"][job["model"]]["arch"]
        kind = {"certify_shard": "certify"}.get(rule, rule)
        rate = rates.get(f"{kind}/{arch}") or tflops * 1e3 / image_gflops(cfg, rule, job)
        hours[f"{rule} {job['model']}"] += work / rate / 3600
    return dict(hours)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/imagenet.yaml")
    parser.add_argument("--tflops", type=float, default=H100_BF16_TFLOPS * EFFICIENCY,
                        help="sustained bf16 TFLOP/s of one GPU (default: 35%% of an H100's)")
    parser.add_argument("--rate", action="append", default=[], metavar="KIND/ARCH=IMAGES_S",
                        help="a measured rate per GPU (kind: pretrain, finetune, certify)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = cfglib.load(args.config)
    rates = {key: float(value) for key, value in (r.split("=") for r in args.rate)}
    jobs = pipeline.jobs(cfg)
    counts: dict[str, int] = defaultdict(int)
    for rule, _ in jobs:
        counts[rule] += 1
    print(f"{args.config}: {len(jobs)} jobs ({', '.join(f'{n} {r}' for r, n in counts.items())})")
    print(f"GPU throughput: {args.tflops:.0f} TFLOP/s sustained per GPU"
          + (f", measured: {', '.join(args.rate)}" if args.rate else " (estimated)"))
    hours = gpu_hours(cfg, args.tflops, rates)
    for key, value in hours.items():
        print(f"  {key:32s} {value:10,.1f} GPU-hours")
    print(f"  {'total':32s} {sum(hours.values()):10,.1f} GPU-hours")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
