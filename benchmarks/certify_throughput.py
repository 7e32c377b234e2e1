"""Certification throughput against the raw batched forward pass of the same classifier.

Prints noisy forward passes per second through ``Certifier.certify`` by the cohen method
(per-image generator, noise drawn on the device, votes counted there, one device-to-host
transfer per image) beside the raw forward pass of the same base classifier on a fixed
batch: the certifier's own ``votes`` module (the model and its argmax, compiled when the
certifier compiles it) under the same autocast, batch size and threads. The ratio is what
certification costs beyond the model; the target is >= 0.95.

The classifier is the project's own (``dmae.models.build_classifier``): by default the first
model of ``--config`` as ``dmae finetune`` builds it, or a preset architecture with ``--arch``
(``vit_base_patch16``: the paper's ViT-B/16 at 224x224, 1,000 classes).

    python benchmarks/certify_throughput.py --threads 1                 # config/default.yaml
    python benchmarks/certify_throughput.py --arch vit_base_patch16 --batch 8 --n0 8 --n 32
    python benchmarks/certify_throughput.py --device cuda --arch vit_base_patch16 \\
        --batch 400 --n0 400 --n 10000 --amp bf16

n0 and n default to one and four batches: a final partial batch runs fewer images through
the same kernels, which the ratio would count as certification overhead.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dmae import config as cfglib
from dmae.acceleration import PRECISIONS, autocast
from dmae.certify import Certifier, build_certifier
from dmae.models import PRESETS, build_classifier

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = {"fashion-mnist": 10, "cifar10": 10, "imagenet": 1000}


@dataclass(frozen=True)
class Throughput:
    """Medians over the rounds: raw forward images/s and certification noisy passes/s."""

    raw: float
    certify: float
    raws: list[float]
    certifies: list[float]
    precision: str  # what the certifier resolved runtime.amp to
    compiled: bool

    @property
    def ratio(self) -> float:
        """The median of each round's ratio: a round's two timings, taken back to back, share
        whatever else the machine was doing, which the ratio of medians would not."""
        return statistics.median(c / r for r, c in zip(self.raws, self.certifies, strict=True))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config" / "default.yaml"))
    parser.add_argument("--model", default=None,
                        help="a key of the config's models (default: the first)")
    parser.add_argument("--arch", default=None, choices=sorted(PRESETS),
                        help="a preset architecture instead of the config's model")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="with --arch (default 1000)")
    parser.add_argument("--batch", type=int, default=None,
                        help="noisy copies per forward pass (default: the config's "
                             "certify.batch_size)")
    parser.add_argument("--n0", type=int, default=None, help="default: one batch")
    parser.add_argument("--n", type=int, default=None, help="default: four batches")
    parser.add_argument("--images", type=int, default=1, help="images certified per round")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"),
                        help="runtime.amp: auto = bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--compile", default="false", choices=("auto", "true", "false"),
                        help="runtime.compile for the certifier and the raw forward alike")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating forward/certify rounds; medians are reported, so a "
                             "machine shared with other jobs biases neither side")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="process: CPU time of this process, steadier on a shared CPU "
                             "(meaningless for GPU work)")
    return parser.parse_args(argv)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(args: argparse.Namespace) -> tuple[torch.nn.Module, str, int, int]:
    """The classifier, its description, input channels and image size."""
    torch.manual_seed(0)
    if args.arch:
        num_classes = args.num_classes or 1000
        model = build_classifier({"arch": args.arch}, num_classes)
        label = args.arch
    else:
        cfg = cfglib.load(args.config)
        key = args.model or next(iter(cfg["models"]))
        method = next(iter(cfg["methods"]))
        clf_cfg, _ = cfglib.finetune_settings(cfg, key, method, cfg["sigmas"][0])
        num_classes = NUM_CLASSES[cfg["dataset"]["name"]]
        model = build_classifier(clf_cfg, num_classes)
        label = f"{Path(args.config).name}: {key} ({clf_cfg['arch']})"
    size = model.patch_embed.img_size
    return model.eval(), label, model.patch_embed.proj.in_channels, int(size[0])


def raw_rate(certifier: Certifier, batch: torch.Tensor, passes: int,
             clock: Callable[[], float]) -> float:
    """Images per second of the certifier's base classifier and argmax on a fixed batch."""
    steps = max(1, round(passes / len(batch)))
    with torch.inference_mode(), autocast(certifier.device, PRECISIONS[certifier.precision]):
        start = clock()
        for _ in range(steps):
            certifier.votes(batch)
        synchronize(certifier.device)
    return steps * len(batch) / (clock() - start)


def certify_rate(certifier: Certifier, images: torch.Tensor,
                 clock: Callable[[], float]) -> float:
    """Noisy forward passes per second through Certifier.certify."""
    start = clock()
    for idx, image in enumerate(images):
        certifier.certify(image, certifier.generator(0, idx))
    synchronize(certifier.device)
    return len(images) * (certifier.method.n0 + certifier.method.n) / (clock() - start)


class NoModel(torch.nn.Module):
    """Logits of zeros: certifying with it times the sampling loop without a classifier."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(len(x), self.num_classes)


def loop_rate(images: torch.Tensor, num_classes: int, *, batch: int, n0: int, n: int,
              sigma: float = 0.5, repeats: int = 5,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Noisy passes per second of everything certification adds to the forward pass (the
    generator, noise, scaling, votes, counts, the transfer), with the classifier left out:
    the best of ``repeats``, as this loop is short and steady."""
    certifier = build_certifier("cohen", NoModel(num_classes), num_classes, sigma, n0=n0, n=n,
                                alpha=0.001, batch_size=batch, device=images.device)
    certify_rate(certifier, images[:1], clock)
    return max(certify_rate(certifier, images, clock) for _ in range(repeats))


def measure(model: torch.nn.Module, images: torch.Tensor, num_classes: int, *, batch: int,
            n0: int, n: int, sigma: float = 0.5, amp: str = "auto",
            compile: bool | str = False, rounds: int = 5,
            clock: Callable[[], float] = time.perf_counter) -> Throughput:
    """Raw forward and certification rates of ``model`` on ``images`` (on its device),
    alternating ``rounds`` times after one untimed round of each (allocator, autotuning,
    torch.compile of every batch shape)."""
    certifier = build_certifier("cohen", model, num_classes, sigma, n0=n0, n=n, alpha=0.001,
                                batch_size=batch, device=images.device, amp=amp,
                                compile=compile)
    fixed = images[:1].expand(batch, -1, -1, -1).contiguous()
    passes = len(images) * (n0 + n)
    raw_rate(certifier, fixed, batch, clock)
    certify_rate(certifier, images[:1], clock)
    raws, certs = [], []
    for _ in range(rounds):
        raws.append(raw_rate(certifier, fixed, passes, clock))
        certs.append(certify_rate(certifier, images, clock))
    return Throughput(statistics.median(raws), statistics.median(certs), raws, certs,
                      certifier.precision, certifier.compiled)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model, label, channels, size = build_model(args)
    num_classes = model.num_classes
    batch = args.batch or cfglib.load(args.config)["certify"]["batch_size"]
    n0, n = args.n0 or batch, args.n or 4 * batch
    images = torch.rand(args.images, channels, size, size,
                        generator=torch.Generator().manual_seed(0)).to(device)
    compile_setting = {"true": True, "false": False}.get(args.compile, args.compile)
    result = measure(model.to(device), images, num_classes, batch=batch, n0=n0, n=n,
                     sigma=args.sigma, amp=args.amp, compile=compile_setting,
                     rounds=args.rounds, clock=clock)
    print(f"device      {device} ({machine(device)}), torch {torch.__version__}")
    print(f"clock       {args.clock}")
    print(f"model       {label}, {channels}x{size}x{size}, {num_classes} classes")
    print(f"settings    batch {batch} n0 {n0} n {n} images {args.images} sigma {args.sigma:g}, "
          f"precision {result.precision}, compile {result.compiled}")
    print(f"forward     {result.raw:10.1f} images/s        rounds: "
          + " ".join(f"{r:.1f}" for r in result.raws))
    print(f"certify     {result.certify:10.1f} noisy passes/s  rounds: "
          + " ".join(f"{c:.1f}" for c in result.certifies))
    print(f"ratio       {result.ratio:10.3f}  (median of the rounds' ratios; of the medians "
          f"{result.certify / result.raw:.3f})")
    loop = loop_rate(images, num_classes, batch=batch, n0=n0, n=n, sigma=args.sigma,
                     clock=clock)
    print(f"loop alone  {loop:10.1f} noisy passes/s  (certification without the classifier)")
    print(f"implied     {1 / result.raw / (1 / result.raw + 1 / loop):10.3f}  (forward time / "
          f"(forward + loop time), from the raw forward median)")


if __name__ == "__main__":
    main()
