"""Training throughput (images/s) of the DMAE engine for a small ViT on the current device.

Runs ``dmae.train.train`` on synthetic data for two short epochs and reports the second
(the first pays for torch.compile and allocator warm-up). Examples::

    python benchmarks/train_throughput.py                       # fine-tune step, CR on
    python benchmarks/train_throughput.py --no-consistency      # Gaussian-noise training only
    python benchmarks/train_throughput.py --pretrain            # MAE-like pretraining step
    python benchmarks/train_throughput.py --img-size 224 --patch 16 --dim 768 --depth 12 \\
        --heads 12 --batch 128                                  # ViT-B/16 (GPU)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from torch.utils.data import TensorDataset

from dmae.train import TrainHParams, read_metrics, train


class Classifier(VisionTransformer):
    """timm ViT on [0,1] pixels (normalizes inside, like the project's classifier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - 0.5) / 0.5)


class PretrainLike(nn.Module):
    """A stand-in with DMAE's pretraining cost profile: noise, keep 25% of the patches,
    encode them with a ViT, decode all patches with a light decoder, MSE to the clean patches.
    """

    def __init__(self, img_size: int, patch: int, dim: int, depth: int, heads: int,
                 in_chans: int, sigma: float = 0.25, mask_ratio: float = 0.75) -> None:
        super().__init__()
        self.sigma, self.mask_ratio, self.patch = sigma, mask_ratio, patch
        self.encoder = VisionTransformer(img_size=img_size, patch_size=patch, in_chans=in_chans,
                                         embed_dim=dim, depth=depth, num_heads=heads,
                                         num_classes=0, class_token=False, global_pool="")
        n, dec = (img_size // patch) ** 2, max(dim // 2, 32)
        self.decoder_embed = nn.Linear(dim, dec)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n, dec))
        self.decoder_blocks = nn.Sequential(*[Block(dec, max(heads // 2, 1)) for _ in range(2)])
        self.decoder_pred = nn.Linear(dec, patch * patch * in_chans)

    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "decoder_pos_embed", "encoder.pos_embed"}

    def forward(self, imgs: torch.Tensor):
        enc = self.encoder
        x = enc.patch_embed((imgs + self.sigma * torch.randn_like(imgs) - 0.5) / 0.5)
        x = x + enc.pos_embed
        b, n, d = x.shape
        keep = int(n * (1 - self.mask_ratio))
        order = torch.rand(b, n, device=x.device).argsort(1)
        kept = order[:, :keep]
        x = enc.norm(enc.blocks(torch.gather(x, 1, kept[..., None].expand(-1, -1, d))))
        y = self.mask_token.expand(b, n, -1).clone()
        y = y.scatter(1, kept[..., None].expand(-1, -1, y.shape[-1]), self.decoder_embed(x))
        pred = self.decoder_pred(self.decoder_blocks(y + self.decoder_pos_embed))
        p = self.patch
        target = imgs.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, n, -1)
        mask = torch.ones(b, n, device=x.device).scatter(1, kept, 0.0)
        return ((pred - target) ** 2).mean(), pred, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain", action="store_true", help="time a pretraining-like step")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--in-chans", type=int, default=3)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64, help="per device")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per timed epoch")
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--no-consistency", action="store_true")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    ap.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    shape = (args.in_chans, args.img_size, args.img_size)
    n_train = args.batch * args.steps
    data = TensorDataset(torch.rand(n_train, *shape), torch.randint(0, 10, (n_train,)))
    val = TensorDataset(torch.rand(args.batch, *shape), torch.randint(0, 10, (args.batch,)))
    compile_ = {"auto": "auto", "true": True, "false": False}[args.compile]
    common = {"epochs": 2, "batch_size": args.batch, "blr": 1e-4, "amp": args.amp,
              "compile": compile_, "eval_every": 2}
    if args.pretrain:
        model = PretrainLike(args.img_size, args.patch, args.dim, args.depth, args.heads,
                             args.in_chans, sigma=args.sigma)
        hp = TrainHParams.from_dict({**common, "task": "pretrain"})
        what = "pretrain (mask 0.75, 2-block decoder)"
    else:
        model = Classifier(img_size=args.img_size, patch_size=args.patch, in_chans=args.in_chans,
                           num_classes=10, embed_dim=args.dim, depth=args.depth,
                           num_heads=args.heads, global_pool="avg", fc_norm=True)
        consistency = {"enabled": not args.no_consistency, "m": 2}
        hp = TrainHParams.from_dict({**common, "task": "finetune", "sigma": args.sigma,
                                     "layer_decay": 0.65, "eval_noise_samples": 1,
                                     "consistency": consistency})
        what = f"finetune ({'m=2 consistency' if consistency['enabled'] else 'noise only'})"

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        train(model, data, val, hp, out, device=args.device, progress=False)
        rows = read_metrics(out / "metrics.csv")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    device = next(model.parameters()).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{what}: ViT dim {args.dim} depth {args.depth} patch {args.patch} "
          f"img {args.img_size} ({params:.2f}M params), batch {args.batch}, device {name}, "
          f"threads {torch.get_num_threads()}, amp {hp.amp}, compile {hp.compile}")
    print(f"warm-up epoch: {float(rows[0]['images_per_s']):.1f} images/s; "
          f"timed epoch: {float(rows[1]['images_per_s']):.1f} images/s "
          f"({args.steps} steps)")


if __name__ == "__main__":
    main()
