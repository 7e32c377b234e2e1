"""DDP under ``torchrun`` with gloo on 2 CPU processes, against a 1-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_engine import stripes
from timm.models.vision_transformer import VisionTransformer

from dmae.train import TrainHParams, read_metrics, train

# The worker script: one tiny fine-tuning run per rank. It wraps (does not replace) the file
# writers of the engine's run folder to count which rank called them, and saves each rank's
# final weights.
WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    import dmae.train.run_folder as run_folder
    from dmae.train import TrainHParams, train

    out_dir, report_dir, hp_json, tests_dir = sys.argv[1:5]
    out_dir, report_dir = Path(out_dir), Path(report_dir)
    sys.path.insert(0, tests_dir)
    from test_train_ddp import stripes, tiny_vit
    rank = int(os.environ["RANK"])
    calls = []
    for name in ("save_checkpoint", "save_resume", "write_metrics_row"):
        real = getattr(run_folder, name)
        def counted(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)
        setattr(run_folder, name, counted)

    torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's weights
    model = tiny_vit()
    hp = TrainHParams.from_dict(json.loads(hp_json))
    out = train(model, stripes(128, 1), stripes(48, 2), hp, out_dir, progress=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(report_dir / f"rank{rank}.safetensors"))
    (report_dir / f"rank{rank}.json").write_text(json.dumps({"calls": calls, "out": out}))
""")

HP = {"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "blr": 2e-2, "eval_noise_samples": 2,
      "sigma": 0.0, "seed": 3, "num_workers": 0}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    script, report = tmp_path / "worker.py", tmp_path / "report"
    script.write_text(WORKER)
    report.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path / "ddp"), str(report), json.dumps(HP),
           str(Path(__file__).parent)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["calls"]) > 0 and ranks[1]["calls"] == []  # only rank 0 wrote
    assert ranks[0]["out"] == ranks[1]["out"]  # metrics are reduced over both ranks
    assert [int(r["epoch"]) for r in read_metrics(tmp_path / "ddp" / "metrics.csv")] == [1, 2]
    meta = json.loads((tmp_path / "ddp" / "last.json").read_text())
    assert meta["world_size"] == 2 and meta["effective_batch"] == 16 and meta["step"] == 16

    w0, w1 = (load_file(report / f"rank{r}.safetensors") for r in (0, 1))
    saved = load_file(tmp_path / "ddp" / "last.safetensors")
    assert all(torch.equal(w0[k], w1[k]) and torch.equal(w0[k], saved[k]) for k in w0)

    # one process with the 2 x 8 images of each step in one batch of 16 takes the same steps
    # (DistributedSampler gives rank r the positions r, r + 2, ... of the same permutation)
    torch.manual_seed(0)  # rank 0's init, which DDP broadcast to rank 1
    model = tiny_vit()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(model, stripes(128, 1), stripes(48, 2),
                       TrainHParams.from_dict({**HP, "batch_size": 16}), tmp_path / "single",
                       progress=False)
    finally:
        torch.set_num_threads(threads)
    ref = load_file(tmp_path / "single" / "last.safetensors")
    assert all(torch.allclose(ref[k], w0[k], rtol=1e-4, atol=1e-5) for k in ref)
    assert single["final"]["val_acc"] == pytest.approx(ranks[0]["out"]["final"]["val_acc"])


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=2, embed_dim=32,
                             depth=2, num_heads=2, global_pool="avg", fc_norm=True)


