"""One GPU check of the paper-scale paths: certification and training throughput of the paper's
ViT-B/16 at 224x224, and an end-to-end smoke workflow on CUDA, printed as one table with the
GPU-hours the paper's tables would take at the measured speeds.

Run by ``benchmarks/gpu_check.sh`` (which passes its arguments on); sized to finish in under 8
minutes on one H100/H200 (not yet timed on one). ``--dry`` runs every row at tiny sizes (the
``vit_micro`` model at 28x28, a few samples, a Snakemake dry-run instead of the smoke
workflow) on whatever device there is, CPU included, so the tests run it and the script
cannot rot; its figures mean nothing.

Rows (one table, Markdown):

- forward / certify / ratio: raw forward images/s of the certifier's own base classifier
  (model + argmax) on a fixed batch, and noisy passes/s through the cohen ``Certifier.certify``
  (``benchmarks/certify_throughput.py``'s ``measure``), at bf16 and fp32, batch 400 and 1000,
  eager; later bf16 at batch 400 through ``torch.compile`` (runtime.compile on CUDA), and
  "s/image compiled", whose first image pays the compiles a certification job pays;
- s/image: one ImageNet-sized image certified as config/imagenet.yaml does it (n0 = 100,
  n = 10,000, batch 400, bf16), timed on its own;
- host syncs: the number of times the host waits for the device while certifying one image
  (CUDA's sync debug mode; on the CPU, the ATen operators that would make it wait, traced);
- ViT-L/16 certify at bf16, batch 400 (for the projection of Table 1);
- pretrain / finetune: optimizer steps per second of DMAE pretraining and of fine-tuning with
  consistency regularization (m = 2), ViT-B/16, bf16, eager, with config/imagenet.yaml's
  per-GPU batch sizes and hyperparameters (the engine's own step, as train_throughput.py);
- smoke: ``snakemake`` of config/smoke.yaml on CUDA (bf16 by runtime.amp auto, not compiled),
  with the precision and device its certification recorded;
- projected GPU-hours: certification of every (model, method, sigma) that config/imagenet.yaml
  (Table 1) and config/cifar10.yaml (Table 3) certify, as images x (n0 + n) / the measured
  noisy passes/s at the config's batch size (bf16, eager; CIFAR-10 images are upsampled to
  224 by the model, so they cost what an ImageNet image does); pretraining and fine-tuning of
  ViT-B as epochs x training images / measured images/s.

Rows are printed as each section ends, most important first; a section that raises becomes
one FAILED row naming the error, and a projection whose rate is missing says "skipped".

Peak memory is ``torch.cuda.max_memory_allocated`` of each row ("-" on the CPU). fp32 is
torch's default on CUDA: matrix products in full fp32, while cuDNN may run the patch
embedding's convolution in TF32 (``torch.backends.cudnn.allow_tf32``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import torch
    import yaml
    from certify_throughput import machine, measure
    from train_throughput import time_steps, train_step

    from dmae import config as cfglib
    from dmae import layout
    from dmae.certify import Certifier, build_certifier
    from dmae.certify.stage import certify_indices
    from dmae.models import build_classifier, build_pretrain_model
    from dmae.train import TrainHParams
except ModuleNotFoundError as err:  # a GPU image's own Python, without the project's packages
    sys.exit(f"gpu_check: {sys.executable} cannot import {err.name!r}. Run it with the "
             "project's environment (make venv), or carry the missing packages' wheels to "
             "the machine in .gpu-wheels/ (benchmarks/README.md, 'gpu_check.sh').")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
COLUMNS = ("check", "model", "precision", "batch", "value", "unit", "peak GiB", "seconds",
           "note")
# Test-set sizes of the datasets the paper certifies (certify.stride picks from them).
TEST_IMAGES = {"imagenet": 50_000, "cifar10": 10_000}
IMAGENET_TRAIN = 1_281_167  # ILSVRC2012 training images; config/imagenet.yaml holds out val_size
SMOKE_TIMEOUT_S = 240  # the smoke workflow takes about a minute; the whole check has 8 min


class MissingRate(Exception):
    """A projection needs a rate whose row failed or was skipped."""


@dataclass(frozen=True)
class Sizes:
    arch: str  # the paper's ViT-B/16, or vit_micro for --dry
    large: str  # ViT-L/16
    label: str
    large_label: str
    num_classes: int
    batches: tuple[int, int]
    paper_n0: int
    paper_n: int
    paper_batch: int
    rounds: int
    train_steps: int
    train_warmup: int
    train_config: str  # the config whose model and hyperparameters training rows use
    train_model: str
    train_batch: int | None = None  # instead of the config's per-GPU batch sizes


FULL = Sizes("vit_base_patch16", "vit_large_patch16", "ViT-B/16 224", "ViT-L/16 224", 1000,
             (400, 1000), 100, 10_000, 400, rounds=3, train_steps=10, train_warmup=3,
             train_config="config/imagenet.yaml", train_model="vit_b")
DRY = Sizes("vit_micro", "vit_micro", "vit_micro 28 (dry)", "vit_micro 28 (dry)", 10,
            (4, 10), 10, 40, 4, rounds=1, train_steps=2, train_warmup=1,
            train_config="config/smoke.yaml", train_model="micro", train_batch=16)


@dataclass
class Row:
    check: str
    model: str
    precision: str
    batch: str
    value: float | str
    unit: str
    peak_gib: float | None
    seconds: float | None  # wall time of the row's measurement (None: counted in another row)
    note: str = ""

    def cells(self) -> list[str]:
        value = self.value if isinstance(self.value, str) else _number(self.value)
        peak = "-" if self.peak_gib is None else f"{self.peak_gib:.1f}"
        cells = [self.check, self.model, self.precision, self.batch, value, self.unit, peak,
                 "-" if self.seconds is None else f"{self.seconds:.0f}", self.note]
        return [cell.replace("|", "/") for cell in cells]  # an error message stays one cell


def _number(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return str(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true",
                    help="tiny sizes on any device (CPU included): checks the script, not speed")
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--no-smoke", action="store_true", help="skip the smoke workflow")
    ap.add_argument("--fmnist-dir", default=None,
                    help="Fashion-MNIST's four .gz files for the smoke workflow (default: "
                         f"Debian's {DEBIAN_FMNIST})")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                    help="snakemake --cores of the smoke workflow")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose "gib" is the peak allocated GPU memory of the block (None on CPU)."""
    out: dict[str, float | None] = {"gib": None}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        out["gib"] = torch.cuda.max_memory_allocated(device) / 2**30


def classifier(arch: str, num_classes: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier({"arch": arch}, num_classes).to(device).eval()


def image_batch(model: torch.nn.Module, device: torch.device, count: int = 1) -> torch.Tensor:
    size = int(model.patch_embed.img_size[0])
    channels = model.patch_embed.proj.in_channels
    return torch.rand(count, channels, size, size,
                      generator=torch.Generator().manual_seed(0)).to(device)


def certification_rows(sizes: Sizes, device: torch.device, rates: dict,
                       runs: list[tuple[str, int, bool]] | None = None) -> list[Row]:
    """forward / certify / ratio of each (precision, batch, compiled) run; by default every
    precision and batch, eager."""
    rows = []
    model = classifier(sizes.arch, sizes.num_classes, device)
    images = image_batch(model, device)
    if runs is None:
        runs = [(p, b, False) for p in ("bf16", "fp32") for b in sizes.batches]
    for precision, batch, compiled in runs:
        start = time.perf_counter()
        with peak_memory(device) as peak:
            result = measure(model, images, sizes.num_classes, batch=batch, n0=batch,
                             n=4 * batch, amp=precision if precision != "fp32" else "off",
                             compile=compiled, rounds=sizes.rounds)
        seconds = time.perf_counter() - start
        rates["certify"][(sizes.arch, precision, batch, compiled)] = result.certify
        mode = " compiled" if compiled else ""
        note = f"n0 {batch}, n {4 * batch}, median of {sizes.rounds}"
        rows += [Row(f"forward{mode}", sizes.label, precision, str(batch), result.raw,
                     "images/s", peak["gib"], seconds, note),
                 Row(f"certify{mode}", sizes.label, precision, str(batch), result.certify,
                     "noisy passes/s", peak["gib"], None, note),
                 Row(f"ratio{mode}", sizes.label, precision, str(batch), result.ratio,
                     "certify / forward", None, None, "target >= 0.9")]
    return rows


def count_host_syncs(certifier: Certifier, image: torch.Tensor) -> tuple[int, str]:
    """How often certifying ``image`` makes the host wait for the device."""
    generator = certifier.generator(0, 0)
    if certifier.device.type == "cuda":
        sync(certifier.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                certifier.certify(image, generator)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        return len(syncs), "CUDA sync debug mode: host waits in one certify()"
    from torch.utils._python_dispatch import TorchDispatchMode

    waits = {"_local_scalar_dense", "item", "is_nonzero", "equal", "bincount", "nonzero",
             "unique", "_unique2", "masked_select", "repeat_interleave", "one_hot"}
    found: list[str] = []

    class Trace(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in waits:
                found.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Trace():
        certifier.certify(image, generator)
    return len(found) + 1, "CPU: traced ATen waits, + the final transfer"


def paper_image(sizes: Sizes, device: torch.device, compiled: bool
                ) -> tuple[Certifier, torch.Tensor, float, float, float | None]:
    """One image certified twice as config/imagenet.yaml certifies it (n0, n, batch, bf16):
    the certifier, the image, the seconds of the first call (warm-up: caches, compiles) and of
    the second, whose image comes from host memory as a dataset run hands it over (the upload
    is part of the cost), and the peak GPU memory."""
    model = classifier(sizes.arch, sizes.num_classes, device)
    image = image_batch(model, device)[0]
    certifier = build_certifier("cohen", model, sizes.num_classes, 0.5, n0=sizes.paper_n0,
                                n=sizes.paper_n, alpha=0.001, batch_size=sizes.paper_batch,
                                device=device, amp="bf16", compile=compiled)
    with peak_memory(device) as peak:
        sync(device)
        t0 = time.perf_counter()
        certifier.certify(image, certifier.generator(0, 1))
        sync(device)
        t1 = time.perf_counter()
        certifier.certify(image.cpu(), certifier.generator(0, 2))
        sync(device)
        t2 = time.perf_counter()
    return certifier, image, t1 - t0, t2 - t1, peak["gib"]


def per_image_rows(sizes: Sizes, device: torch.device, rates: dict) -> list[Row]:
    """One image as config/imagenet.yaml certifies it, and its host syncs."""
    certifier, image, first, per_image, peak = paper_image(sizes, device, compiled=False)
    rows = [Row("s/image", sizes.label, "bf16", str(sizes.paper_batch), per_image, "s/image",
                peak, first + per_image, f"n0 {sizes.paper_n0} + n {sizes.paper_n:,}, one "
                "image uploaded from the host; target <= 2")]
    start = time.perf_counter()
    syncs, how = count_host_syncs(certifier, image)  # on the device already: the loop's own
    rows.append(Row("host syncs", sizes.label, "bf16", str(sizes.paper_batch), float(syncs),
                    "per image", None, time.perf_counter() - start,
                    f"{how}; {math.ceil(sizes.paper_n / sizes.paper_batch)} + 1 batches"))
    return rows


def compiled_rows(sizes: Sizes, device: torch.device, rates: dict,
                  compiled: bool = True) -> list[Row]:
    """torch.compile (what runtime.compile "auto" does on CUDA): the throughput rows at the
    first batch size, then one image certified as config/imagenet.yaml does it. That first
    image pays the compiles a certification job pays once: n0's batch, then the
    dynamic-shape graph that serves n's batches. ``compiled=False`` (--dry) runs the same
    rows eagerly."""
    rows = certification_rows(sizes, device, rates, [("bf16", sizes.batches[0], compiled)])
    _, _, first, per_image, peak = paper_image(sizes, device, compiled)
    rows.append(Row("s/image compiled", sizes.label, "bf16", str(sizes.paper_batch), per_image,
                    "s/image", peak, first + per_image,
                    f"n0 {sizes.paper_n0} + n {sizes.paper_n:,}; the first image took "
                    f"{first:.1f} s with its compiles"
                    + ("" if compiled else " (--dry: not compiled)")))
    return rows


def large_rows(sizes: Sizes, device: torch.device, rates: dict) -> list[Row]:
    """ViT-L/16 certification at bf16 (for the projection of Table 1)."""
    rows = []
    large = classifier(sizes.large, sizes.num_classes, device)
    images = image_batch(large, device)
    batch = sizes.batches[0]
    start = time.perf_counter()
    with peak_memory(device) as peak:
        result = measure(large, images, sizes.num_classes, batch=batch, n0=batch, n=4 * batch,
                         amp="bf16", rounds=sizes.rounds)
    rates["certify"][(sizes.large, "bf16", batch, False)] = result.certify
    rows.append(Row("certify", sizes.large_label, "bf16", str(batch), result.certify,
                    "noisy passes/s", peak["gib"], time.perf_counter() - start,
                    f"forward {result.raw:,.0f} images/s, ratio {result.ratio:.3f}"))
    return rows


def training_rows(sizes: Sizes, device: torch.device, rates: dict) -> list[Row]:
    """Optimizer steps/s of DMAE pretraining and consistency fine-tuning, bf16, eager."""
    cfg = cfglib.load(REPO / sizes.train_config)
    pre_cfg, pre_hp = cfglib.pretrain_settings(cfg, sizes.train_model, "dmae")
    clf_cfg, ft_hp = cfglib.finetune_settings(cfg, sizes.train_model, "dmae", 0.5)
    ft_hp.pop("randaugment", None)  # data augmentation, not part of a step
    common = {"amp": "bf16", "compile": False,
              **({"batch_size": sizes.train_batch} if sizes.train_batch else {})}
    pre_hp = TrainHParams.from_dict({**pre_hp, **common})
    ft_hp = TrainHParams.from_dict({**ft_hp, **common})
    num_classes = sizes.num_classes
    rows = []
    for what, hp in (("pretrain", pre_hp), ("finetune CR", ft_hp)):
        start = time.perf_counter()
        with peak_memory(device) as peak:
            torch.manual_seed(0)
            if what == "pretrain":
                model = build_pretrain_model(pre_cfg).to(device).train()
                c, s = model.in_chans, model.img_size
                batch = torch.rand(hp.batch_size, c, s, s, device=device)
            else:
                model = build_classifier(clf_cfg, num_classes).to(device).train()
                c, s = model.patch_embed.proj.in_channels, int(model.patch_embed.img_size[0])
                batch = (torch.rand(hp.batch_size, c, s, s, device=device),
                         torch.randint(0, num_classes, (hp.batch_size,), device=device))
            step = train_step(model, hp, batch, device)
            times, _ = time_steps(step, sizes.train_steps, sizes.train_warmup, device)
        median = sorted(times)[len(times) // 2]
        rates["train"][what] = hp.batch_size / median
        copies = f", m = {hp.consistency.m}" if what != "pretrain" else ""
        batch_note = "dry batch" if sizes.train_batch else f"{sizes.train_config} per-GPU batch"
        note = f"{hp.batch_size / median:,.0f} images/s, {batch_note}{copies}"
        rows.append(Row(what, sizes.label, "bf16", str(hp.batch_size), 1 / median, "steps/s",
                        peak["gib"], time.perf_counter() - start, note))
        del model, step, batch
    return rows


# ---------------------------------------------------------------------------------------------
# The smoke workflow
# ---------------------------------------------------------------------------------------------


def smoke_row(args: argparse.Namespace, device: torch.device) -> Row:
    """config/smoke.yaml through snakemake on ``device`` (a dry-run with --dry)."""
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["runtime"].update(device=device.type, amp="auto", compile=False)
    source = Path(args.fmnist_dir) if args.fmnist_dir else DEBIAN_FMNIST
    if args.fmnist_dir:
        cfg["dataset"]["source_dir"] = str(source)
    label = "smoke (snakemake -n)" if args.dry else "smoke workflow"
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    tools = {tool: shutil.which(tool, path=path) for tool in ("snakemake", "dmae")}
    missing = [tool for tool, found in tools.items() if found is None]
    if missing:
        return Row(label, "config/smoke.yaml", "auto", "-", "skipped", "", None, 0.0,
                   f"{' and '.join(missing)} not found beside {sys.executable} or on PATH "
                   "(make venv)")
    if not args.dry and not source.is_dir():
        return Row(label, "config/smoke.yaml", "auto", "-", "skipped", "", None, 0.0,
                   f"no Fashion-MNIST files at {source} (--fmnist-dir)")
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check_smoke_"))
    try:
        configfile = workdir / "smoke.yaml"
        configfile.write_text(yaml.safe_dump(cfg))
        cmd = [str(tools["snakemake"]), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--cores", str(args.cores), *(["-n"] if args.dry else []),
               "--configfile", str(configfile)]
        env = {**os.environ, "PATH": path}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                  timeout=SMOKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return Row(label, "config/smoke.yaml", "auto", "-", "FAILED", "", None,
                       time.perf_counter() - start, f"still running after {SMOKE_TIMEOUT_S} s")
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return Row(label, "config/smoke.yaml", "auto", "-", "FAILED", "", None, seconds,
                       " / ".join(tail))
        jobs = _job_count(proc.stdout + proc.stderr)
        note = f"{jobs} jobs"
        if not args.dry:
            # a shard's metadata: a merged TSV's does not name the device
            shard = layout.certify_shard_tsv(cfg, *layout.runs(cfg)[0], 0)
            first = workdir / layout.meta_path(shard)
            meta = json.loads(first.read_text()) if first.is_file() else {}
            note += (f"; certification ran at {meta.get('settings', {}).get('precision')} "
                     f"on {meta.get('info', {}).get('device', '?')}" if meta else
                     "; no certification metadata found")
        return Row(label, "config/smoke.yaml", "auto", "-", seconds, "s", None, seconds, note)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _job_count(log: str) -> str:
    """The total of Snakemake's job table, or '?'."""
    for line in log.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "total" and fields[1].isdigit():
            return fields[1]
    return "?"


# ---------------------------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------------------------


def certification_hours(config: str, rates: dict, sizes: Sizes) -> tuple[float, str]:
    """GPU-hours to certify every (model, method, sigma) of ``config`` at the measured bf16
    eager rates, with the note saying what was counted. MissingRate names a missing rate."""
    cfg = cfglib.load(REPO / config)
    c = cfg["certify"]
    images = len(certify_indices(cfg, TEST_IMAGES[cfg["dataset"]["name"]]))
    seconds, runs = 0.0, layout.runs(cfg)
    for model, _, _ in runs:
        arch = cfg["models"][model]["arch"]
        key = sizes.large if arch == "vit_large_patch16" else sizes.arch
        measured = {b: r for (a, p, b, compiled), r in rates["certify"].items()
                    if a == key and p == "bf16" and not compiled}
        if not measured:
            raise MissingRate(f"bf16 eager certification rate of {key}")
        batch = min(measured, key=lambda b: abs(b - c["batch_size"]))  # the config's, if run
        seconds += images * (c["n0"] + c["n"]) / measured[batch]
    return seconds / 3600, (f"{len(runs)} certifications x {images:,} images x "
                            f"(n0 {c['n0']} + n {c['n']:,}), cohen")


def training_hours(what: str, rates: dict) -> tuple[float, str]:
    """GPU-hours of ViT-B pretraining ("pretrain") or CR fine-tuning ("finetune CR") as
    config/imagenet.yaml runs them, at the measured images/s."""
    if what not in rates["train"]:
        raise MissingRate(f"{what} rate")
    cfg = cfglib.load(REPO / "config" / "imagenet.yaml")
    train_images = IMAGENET_TRAIN - cfg["dataset"]["val_size"]
    if what == "pretrain":
        epochs = cfglib.pretrain_settings(cfg, "vit_b", "dmae")[1]["epochs"]
        runs, note = 1, f"{epochs} epochs x {train_images:,} images, eager"
    else:
        epochs = cfglib.finetune_settings(cfg, "vit_b", "dmae", 0.5)[1]["epochs"]
        runs = len(cfg["sigmas"])
        note = f"{runs} sigmas x {epochs} epochs x {train_images:,} images, eager"
    return runs * epochs * train_images / rates["train"][what] / 3600, note


def projection_rows(rates: dict, sizes: Sizes) -> list[Row]:
    """GPU-hours of the paper's tables; a projection whose rate was not measured (its row
    failed or was skipped) says so instead."""
    projections = [
        ("projected: Table 1 certification", "config/imagenet.yaml",
         lambda: certification_hours("config/imagenet.yaml", rates, sizes)),
        ("projected: Table 3 certification", "config/cifar10.yaml",
         lambda: certification_hours("config/cifar10.yaml", rates, sizes)),
        ("projected: ViT-B pretraining", "config/imagenet.yaml",
         lambda: training_hours("pretrain", rates)),
        ("projected: ViT-B fine-tuning, CR", "config/imagenet.yaml",
         lambda: training_hours("finetune CR", rates)),
    ]
    rows = []
    for check, config, project in projections:
        try:
            hours, note = project()
        except MissingRate as missing:
            hours, note = "skipped", f"no measured {missing.args[0]}"
        rows.append(Row(check, config, "bf16", "config", hours, "GPU-hours", None, None, note))
    return rows


# ---------------------------------------------------------------------------------------------


def print_row(row: Row) -> None:
    print("| " + " | ".join(row.cells()) + " |", flush=True)


def run_section(name: str, produce, rows: list[Row], device: torch.device) -> None:
    """Add ``produce()``'s rows to ``rows``, printing each at once. A failure (a compile, an
    out-of-memory) becomes one FAILED row, so it loses nothing measured before or after it."""
    start = time.perf_counter()
    try:
        new = produce()
    except Exception as err:  # noqa: BLE001 - reported in the table, the check goes on
        message = (str(err).strip().splitlines() or [""])[0][:200]
        new = [Row(name, "-", "-", "-", "FAILED", "", None, time.perf_counter() - start,
                   f"{type(err).__name__}: {message}")]
    if device.type == "cuda":
        torch.cuda.empty_cache()  # out of the except: the traceback no longer holds tensors
    for row in new:
        rows.append(row)
        print_row(row)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: torch sees no CUDA device", file=sys.stderr)
        return 2
    if device.type != "cuda" and not args.dry:
        print("no CUDA device: run with --dry to check the script on the CPU", file=sys.stderr)
        return 2
    sizes = DRY if args.dry else FULL
    begin = time.perf_counter()
    rates: dict = {"certify": {}, "train": {}}  # noisy passes/s; training images/s
    print(f"\n{'DRY RUN (tiny sizes: the figures mean nothing); ' if args.dry else ''}"
          f"device {device} ({machine(device)}), torch {torch.__version__}\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|", flush=True)
    # Most important first: when the time runs out, what is printed is kept.
    # Most important first (the projections need only the rates measured before them), so
    # that a run stopped by its time limit keeps what matters.
    sections = [("certify", lambda: certification_rows(sizes, device, rates)),
                ("s/image", lambda: per_image_rows(sizes, device, rates)),
                ("training", lambda: training_rows(sizes, device, rates)),
                ("certify ViT-L", lambda: large_rows(sizes, device, rates)),
                ("projections", lambda: projection_rows(rates, sizes))]
    if not args.no_compile:
        # --dry runs these rows eagerly: it checks their wiring, not the compiler
        sections.append(("compiled", lambda: compiled_rows(sizes, device, rates,
                                                           compiled=not args.dry)))
    if not args.no_smoke:
        sections.append(("smoke", lambda: [smoke_row(args, device)]))
    rows: list[Row] = []
    for name, produce in sections:
        run_section(name, produce, rows, device)
        if args.json:  # after every section, so a run cut short keeps its rows
            write_json(Path(args.json), {
                "device": str(device), "machine": machine(device), "dry": args.dry,
                "torch": torch.__version__, "rows": [asdict(r) for r in rows]})
    failed = [row.check for row in rows if row.value == "FAILED"]
    print(f"\n{time.perf_counter() - begin:.0f} s in all"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def write_json(path: Path, obj: dict) -> None:
    """Written whole or not at all: the time limit may stop the check at any moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def stop_on_sigterm() -> None:
    """The time limit's SIGTERM as SystemExit: a running smoke workflow (subprocess.run) is
    killed on the way out instead of left behind."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


if __name__ == "__main__":
    sys.exit(main())
