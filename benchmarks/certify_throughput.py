"""Certification throughput against the raw batched forward pass of the same model.

Prints noisy forward passes per second through ``CohenCertifier.certify`` (noise generation,
counting on the device, one host sync per image included) beside plain ``model(batch)``
throughput at the same input size, batch size and autocast, and their ratio (the target is
>= 90%).

    python benchmarks/certify_throughput.py                       # small ViT, CPU or GPU
    python benchmarks/certify_throughput.py --device cuda --img-size 224 --batch 400 \\
        --n0 100 --n 10000 --model vit_base_patch16_224

Pick n0 and n as multiples of the batch size for a like-for-like comparison: a final partial
batch runs fewer images through the same kernels, which the ratio would count as overhead.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import timm
import torch

from dmae.certify import CohenCertifier
from dmae.certify.smooth import inference_autocast


class Normalized(torch.nn.Module):
    """Takes [0,1] images and normalizes them, as the project's base classifiers do."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224", help="timm model name")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--n0", type=int, default=50)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--images", type=int, default=1, help="images to certify")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating forward/certify rounds; medians are reported, so a "
                             "machine shared with other jobs biases neither side")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="process: CPU time of this process, steadier on a shared CPU "
                             "(meaningless for GPU work)")
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_rate(model: torch.nn.Module, batch: torch.Tensor, passes: int,
                 clock: Callable[[], float]) -> float:
    """Images per second of plain batched inference (the certifier's autocast)."""
    device = batch.device
    steps = max(1, round(passes / len(batch)))
    with torch.inference_mode(), inference_autocast(device):
        start = clock()
        for _ in range(steps):
            model(batch).argmax(1)
        synchronize(device)
    return steps * len(batch) / (clock() - start)


def certify_rate(certifier: CohenCertifier, images: torch.Tensor,
                 clock: Callable[[], float]) -> float:
    """Noisy forward passes per second through CohenCertifier.certify."""
    start = clock()
    for idx, image in enumerate(images):
        certifier.certify(image, certifier.generator(0, idx))
    synchronize(certifier.device)
    return len(images) * (certifier.n0 + certifier.n) / (clock() - start)


def main() -> None:
    args = parse_args()
    clock = time.process_time if args.clock == "process" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, img_size=args.img_size,
                              num_classes=args.num_classes)
    model = Normalized(model).to(device).eval()
    images = torch.rand(args.images, 3, args.img_size, args.img_size, device=device)

    warm, timed = (CohenCertifier(model, args.num_classes, args.sigma, n0=args.n0, n=n,
                                  alpha=0.001, batch_size=args.batch, device=device)
                   for n in (args.n0, args.n))

    passes = args.images * (args.n0 + args.n)
    batch = images[:1].expand(args.batch, -1, -1, -1).contiguous()
    forward_rate(model, batch, args.batch, clock)  # warm-up (allocator, kernels, autotuning)
    certify_rate(warm, images[:1], clock)
    raws, certs = [], []
    for _ in range(args.rounds):
        raws.append(forward_rate(model, batch, passes, clock))
        certs.append(certify_rate(timed, images, clock))
    raw, cert = statistics.median(raws), statistics.median(certs)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads")
    print(f"device      {device} ({where})")
    print(f"clock       {args.clock}")
    print(f"model       {args.model} img {args.img_size} batch {args.batch} "
          f"n0 {args.n0} n {args.n} images {args.images}")
    print(f"forward     {raw:10.1f} images/s        rounds: "
          + " ".join(f"{r:.1f}" for r in raws))
    print(f"certify     {cert:10.1f} noisy passes/s  rounds: "
          + " ".join(f"{c:.1f}" for c in certs))
    print(f"ratio       {100 * cert / raw:10.1f} %")


if __name__ == "__main__":
    main()
