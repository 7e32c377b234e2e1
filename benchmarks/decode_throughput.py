"""How many ImageNet training images one CPU core decodes and augments per second.

Each data-loader worker runs what ``dmae.data.ImageIndexSplit`` does for one image: open the
JPEG, convert it to RGB, apply the ImageNet transform of the task (``get_dataset("imagenet")
.transform``): random resized crop to 224 (bicubic) and flip for pretraining; the same with
timm's RandAugment for fine-tuning, as ``config/imagenet.yaml`` sets it. One process, one
thread: the rate of one worker on one core. The GPU configs' CPUs per GPU follow from it
(the README's cluster section): a GPU that trains R images/s needs R / rate workers.

The images are synthetic JPEGs of ImageNet's typical size and weight (500 x 375, quality 90:
about 110 kB, near the training set's mean file size), with smooth content and noise, so the
decoder does real work. Example::

    python benchmarks/decode_throughput.py --images 200
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmae.data import get_dataset

RANDAUGMENT = "rand-m9-mstd0.5-inc1"  # config/imagenet.yaml's fine-tuning


def synthetic_jpegs(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BICUBIC), float)
        pixels = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        images.append(buf.getvalue())
    return images


def rate(jpegs: list[bytes], transform, rounds: int) -> float:
    """Median images/s over ``rounds`` passes."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for data in jpegs:
            with Image.open(io.BytesIO(data)) as img:
                transform(img.convert("RGB"))
        seconds.append(time.perf_counter() - start)
    return len(jpegs) / statistics.median(seconds)


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    jpegs = synthetic_jpegs(args.images)
    imagenet = get_dataset("imagenet")
    print(f"CPU: {cpu_model()}, 1 thread; "
          f"{args.images} JPEGs of {statistics.mean(map(len, jpegs)) / 1000:.0f} kB on average")
    print("| transform | images/s per core |")
    print("|---|---:|")
    for name, transform in (
        ("pretraining (crop 0.2-1, flip)", imagenet.transform(True, 224, task="pretrain")),
        (f"fine-tuning (crop, flip, {RANDAUGMENT})",
         imagenet.transform(True, 224, task="finetune", randaugment=RANDAUGMENT)),
        ("evaluation (resize 256, center crop)", imagenet.transform(False, 224)),
    ):
        print(f"| {name} | {rate(jpegs, transform, args.rounds):,.0f} |")


if __name__ == "__main__":
    main()
