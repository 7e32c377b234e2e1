"""A training process that kills itself (SIGKILL) at a chosen point, for test_train_faults.py.

    python train_faults_worker.py OUT_DIR HP_JSON [FUNCTION:N]
    torchrun --nproc_per_node 2 train_faults_worker.py OUT_DIR HP_JSON [FUNCTION:N]

Trains the tiny classifier of test_train_engine.py with ``dmae.train.train``. With
``FUNCTION:N``, rank 0 sends itself SIGKILL right after the N-th call of ``FUNCTION`` returns
(``optimizer_step`` in the engine; ``save_checkpoint``, ``copy_checkpoint``, ``save_resume``
in its run folder): the training code runs unchanged up to that instant, as in a job killed
there.

The validation labels are the training labels flipped, so validation accuracy falls as the
model learns and the best epoch is the first: every later epoch runs after the last
improvement.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_train_engine import brightness, fresh_classifier  # noqa: E402

import dmae.train.engine as engine  # noqa: E402
import dmae.train.run_folder as run_folder  # noqa: E402
from dmae.train import TrainHParams, train  # noqa: E402

# The module whose calls of each function are counted.
CALLERS = {"optimizer_step": engine, "save_checkpoint": run_folder,
           "copy_checkpoint": run_folder, "save_resume": run_folder}


def kill_after(function: str, calls: int) -> None:
    module = CALLERS[function]
    real = getattr(module, function)
    count = 0

    def counted(*args, **kwargs):
        nonlocal count
        result = real(*args, **kwargs)
        count += 1
        if count == calls:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, function, counted)


def main() -> None:
    out_dir, hp_json, *kill = sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(1)
    if kill and int(os.environ.get("RANK", "0")) == 0:
        function, calls = kill[0].split(":")
        kill_after(function, int(calls))
    train_set, val_set = brightness(128, 1), brightness(48, 2)
    val_set.tensors = (val_set.tensors[0], 1 - val_set.tensors[1])
    model = fresh_classifier(drop_rate=0.1)
    out = train(model, train_set, val_set, TrainHParams.from_dict(json.loads(hp_json)),
                Path(out_dir), progress=False)
    print(json.dumps({"best_epoch": out["best"]["epoch"], "epoch": out["epoch"]}))


if __name__ == "__main__":
    main()
