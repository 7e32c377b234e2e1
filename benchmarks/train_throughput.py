"""Training throughput (images/s) of the project's own models and optimizer steps.

Times three kinds of training step of the model a config defines (``config/default.yaml``:
the Fashion-MNIST ViT), built with ``dmae.models.build_pretrain_model`` / ``build_classifier``
from the settings ``dmae.config`` resolves, exactly as ``dmae pretrain`` / ``dmae finetune``
build them:

- DMAE pretraining: noise + 75% masking + encoder + decoder + loss (the model's own forward),
- fine-tuning with consistency regularization (m noisy copies of each image, m from the
  config, 2 by default; the consistency loss of ``dmae.train``),
- fine-tuning with Gaussian noise only (RS / no consistency).

Each step is the engine's, through the pieces it runs itself: the loss of the run's
objective (``dmae.train.objectives.objective_for``: noise on [0, 1] pixels, autocast as
``dmae.acceleration.amp_dtype`` resolves ``runtime.amp`` on the device), backward through
``grad_scaler``, then ``dmae.train.optim.optimizer_step`` at the MAE schedule's learning
rate (``lr_at``): one AdamW step over ``dmae.train.build_optimizer``'s parameter groups
(weight decay and layer-wise lr decay as configured), ``zero_grad``. Inputs are random
[0, 1] tensors of the model's shape, so data loading is not included
(``benchmarks/reproduce_budget.py`` times whole epochs on the real data). With CUDA present
it also times the paper's ViT-B/16 at 224x224 under bf16 autocast (``--no-vit-b`` skips it).

Attention must run through PyTorch's fused ``scaled_dot_product_attention``: the script
prints timm's ``Attention.fused_attn`` flag of every block of the models it builds and exits
with an error if any block would use the unfused path.

The images/s figure is the batch size over the MEDIAN step time, so a step slowed down by
another process on a shared machine does not move it; CPU seconds per image (process time,
all threads) are printed beside it. Examples::

    python benchmarks/train_throughput.py                         # config/default.yaml, CPU
    python benchmarks/train_throughput.py --threads 1 --steps 30  # one core
    python benchmarks/train_throughput.py --device cuda --batch 128
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dmae import config as cfglib
from dmae.acceleration import amp_dtype, grad_scaler, use_compile
from dmae.models import PRETRAINING_KEYS, build_classifier, build_pretrain_model
from dmae.train import TrainHParams, build_optimizer
from dmae.train.objectives import objective_for
from dmae.train.optim import lr_at, optimizer_step, peak_lr

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = {"fashion-mnist": 10, "cifar10": 10, "imagenet": 1000}


@dataclass
class Timing:
    what: str
    batch: int  # images per optimizer step (before the m copies of consistency)
    step_times: list[float]  # wall seconds of each timed step
    cpu_s: float  # process CPU time of all timed steps

    @property
    def images_per_s(self) -> float:
        return self.batch / statistics.median(self.step_times)

    @property
    def best_images_per_s(self) -> float:
        return self.batch / min(self.step_times)

    @property
    def cpu_ms_per_image(self) -> float:
        return 1e3 * self.cpu_s / (self.batch * len(self.step_times))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config" / "default.yaml"),
                    help="project config whose model and hyperparameters are timed")
    ap.add_argument("--model", default=None, help="a key of the config's models (default: first)")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per mode")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, "
                    "oneDNN / cuDNN autotuning, torch.compile)")
    ap.add_argument("--batch", type=int, default=None,
                    help="images per step for every mode (default: the config's pretrain and "
                         "finetune batch_size)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's, i.e. OMP_NUM_THREADS or all cores)")
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    ap.add_argument("--compile", choices=("auto", "true", "false"), default=None,
                    help="torch.compile the model (default: the config's runtime.compile; "
                         "auto = CUDA only, as the engine)")
    ap.add_argument("--vit-b-batch", type=int, default=64,
                    help="per-step batch of the ViT-B/16 runs on CUDA")
    ap.add_argument("--no-vit-b", action="store_true", help="skip ViT-B/16 even on CUDA")
    return ap.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_fused_attention(model: torch.nn.Module, name: str) -> bool:
    """Print timm's ``fused_attn`` of every attention block; True when all are fused."""
    flags = [bool(m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]
    ok = bool(flags) and all(flags)
    print(f"  {name}: {len(flags)} attention blocks, fused_attn (F.scaled_dot_product_"
          f"attention) = {sorted(set(flags)) if flags else 'none found'}"
          f"{'' if ok else '  <-- NOT FUSED'}")
    return ok


def time_steps(step: Callable[[], None], steps: int, warmup: int,
               device: torch.device) -> tuple[list[float], float]:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    cpu0 = time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, time.process_time() - cpu0


def train_step(model: torch.nn.Module, hp: TrainHParams, batch, device: torch.device
               ) -> Callable[[], None]:
    """The engine's optimizer step on a fixed ``batch`` (images, or images and labels), with
    the lr of step i of a 1000-step schedule that warms up for 10."""
    net = torch.compile(model) if use_compile(hp.compile, device) else model
    opt = build_optimizer(model, hp)
    params = [p for g in opt.param_groups for p in g["params"]]
    dtype = amp_dtype(hp.amp, device)
    scaler = grad_scaler(device, dtype)
    objective = objective_for(hp, model)
    peak = peak_lr(hp)
    state = {"step": 0}

    def step() -> None:
        loss = objective.loss(net, batch, device, dtype)
        scaler.scale(loss).backward()
        optimizer_step(opt, scaler, lr_at(state["step"], 1000, 10, peak, hp.min_lr),
                       hp.clip_grad, params)
        state["step"] += 1

    return step


def bench_models(label: str, pre_cfg: dict, pre_hp: dict, clf_cfg: dict, ft_hp: dict,
                 num_classes: int, args: argparse.Namespace, device: torch.device,
                 batches: tuple[int, int], compile_mode: str | bool) -> tuple[list[Timing], bool]:
    """Time pretraining and both fine-tuning modes of one architecture."""
    torch.manual_seed(0)
    pre_hp = TrainHParams.from_dict({**pre_hp, "compile": compile_mode})
    ft_hp = TrainHParams.from_dict({**ft_hp, "compile": compile_mode})
    pre_model = build_pretrain_model(pre_cfg).to(device).train()
    fused = check_fused_attention(pre_model, f"{label} pretraining model")
    clf = build_classifier(clf_cfg, num_classes)
    fused &= check_fused_attention(clf, f"{label} classifier")
    c, h, w = pre_model.in_chans, pre_model.img_size, pre_model.img_size
    results = []

    pre_b, ft_b = batches
    imgs = torch.rand(pre_b, c, h, w, device=device)
    step = train_step(pre_model, pre_hp, imgs, device)
    times, cpu = time_steps(step, args.steps, args.warmup, device)
    results.append(Timing(f"{label} pretrain (sigma {pre_model.sigma:g}, mask "
                          f"{pre_model.mask_ratio:g})", pre_b, times, cpu))
    del pre_model, step

    imgs = torch.rand(ft_b, c, h, w, device=device)
    labels = torch.randint(0, num_classes, (ft_b,), device=device)
    for consistency in (True, False):
        torch.manual_seed(0)
        model = build_classifier(clf_cfg, num_classes).to(device).train()
        hp = dataclasses.replace(ft_hp, consistency=dataclasses.replace(ft_hp.consistency,
                                                                        enabled=consistency))
        step = train_step(model, hp, (imgs, labels), device)
        times, cpu = time_steps(step, args.steps, args.warmup, device)
        what = (f"{label} finetune, consistency m={ft_hp.consistency.m}" if consistency
                else f"{label} finetune, noise only (RS)")
        results.append(Timing(what, ft_b, times, cpu))
    return results, fused


def print_table(results: list[Timing], device: torch.device, threads: int) -> None:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\ndevice {where}, torch {torch.__version__}, {threads} CPU threads")
    print(f"{'mode':58s} {'batch':>5s} {'img/s':>8s} {'best':>8s} {'CPU ms/img':>10s}")
    for r in results:
        print(f"{r.what:58s} {r.batch:5d} {r.images_per_s:8.0f} {r.best_images_per_s:8.0f} "
              f"{r.cpu_ms_per_image:10.3f}")
    print("img/s: batch / median step time (an optimizer step; consistency runs m copies of "
          "each image but counts it once); best: batch / fastest step; CPU ms/img: process "
          "time of all threads per image")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)

    cfg = cfglib.load(args.config)
    model = args.model or next(iter(cfg["models"]))
    pretraining = "dmae" if "dmae" in cfg["pretrainings"] else next(iter(cfg["pretrainings"]))
    # the config's consistency method, the one fine-tuning from this pretraining first
    # (dmae + CR), at the middle sigma
    cr_methods = sorted((s["pretraining"] != pretraining, m) for m, s in cfg["methods"].items()
                        if s["consistency"])
    cr_methods = [m for _, m in cr_methods]
    method = cr_methods[0] if cr_methods else next(iter(cfg["methods"]))
    sigma = sorted(cfg["sigmas"])[len(cfg["sigmas"]) // 2]
    pre_cfg, pre_hp = cfglib.pretrain_settings(cfg, model, pretraining)
    clf_cfg, ft_hp = cfglib.finetune_settings(cfg, model, method, sigma)
    ft_hp.pop("randaugment", None)
    # the engine's hparams value: "auto", true or false
    compile_mode = ({"true": True, "false": False}.get(args.compile, args.compile)
                    if args.compile else cfg["runtime"]["compile"])
    batches = (args.batch or pre_hp["batch_size"], args.batch or ft_hp["batch_size"])
    num_classes = NUM_CLASSES[cfg["dataset"]["name"]]
    print(f"{args.config}: model {model} ({pre_cfg['arch']}), pretraining {pretraining}, "
          f"fine-tuning {method} at sigma {sigma:g}; {args.steps} timed steps after "
          f"{args.warmup} warm-up steps; compile {compile_mode}")
    results, fused = bench_models(model, pre_cfg, pre_hp, clf_cfg, ft_hp, num_classes, args,
                                  device, batches, compile_mode)

    if device.type == "cuda" and not args.no_vit_b:
        # The paper's ViT-B/16 at 224x224 (ImageNet), bf16 autocast as the engine on CUDA.
        vit_b = {"arch": "vit_base_patch16"}
        common = {"amp": "bf16", "seed": 0}
        vb_pre_hp = {**common, "task": "pretrain", "batch_size": args.vit_b_batch,
                     "blr": 1.5e-4, "weight_decay": 0.05, "betas": [0.9, 0.95]}
        vb_ft_hp = {**common, "task": "finetune", "batch_size": args.vit_b_batch, "blr": 5e-4,
                    "weight_decay": 0.05, "layer_decay": 0.65, "label_smoothing": 0.1,
                    "sigma": 0.5, "consistency": {"enabled": True, "m": 2, "lambda": 2.0,
                                                  "eta": 0.5}}
        vb_clf = {**vit_b, "global_pool": "avg", "drop_path_rate": 0.1}
        # the config's pretraining recipe (noise, masking, loss) on ViT-B/16
        vb_pre = {**vit_b, **{key: pre_cfg[key] for key in PRETRAINING_KEYS}}
        vb, vb_fused = bench_models("ViT-B/16 224 bf16", vb_pre, vb_pre_hp,
                                    vb_clf, vb_ft_hp, 1000, args, device,
                                    (args.vit_b_batch, args.vit_b_batch), compile_mode)
        results += vb
        fused &= vb_fused
    elif device.type != "cuda":
        print("  (no CUDA device: ViT-B/16 at 224 not timed)")

    print_table(results, device, torch.get_num_threads())
    if not fused:
        print("error: some attention blocks do not use F.scaled_dot_product_attention "
              "(timm's fused_attn is False; check TIMM_FUSED_ATTN)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
