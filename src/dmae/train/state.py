"""Resume state (``resume.pt``), RNG capture and the per-run ``metrics.csv`` / ``timing.csv``.

``metrics.csv`` holds what the run learned (losses, accuracies, lr), which the same seed
reproduces byte for byte; ``timing.csv`` holds how long it took, which no rerun reproduces,
so only the first is a workflow output.

``resume.pt`` holds only tensors and plain Python types so it loads with
``torch.load(weights_only=True)``: no pickled objects are ever executed.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmae.io import atomic_path

RESUME_FORMAT = 1
METRIC_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_acc",
                  "val_smoothed_acc")
TIMING_COLUMNS = ("epoch", "images_per_s", "epoch_time_s", "wall_time_s")


def capture_rng() -> dict[str, Any]:
    """This process's torch (CPU + CUDA), numpy and python RNG states as plain types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``; CUDA states are restored only on the same device count."""
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and python ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def save_resume(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a killed write leaves the previous resume.pt intact)."""
    with atomic_path(path) as tmp:
        torch.save({"format": RESUME_FORMAT, **state}, tmp)


def load_resume(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read ``resume.pt`` with ``weights_only=True``; a foreign format is an error."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable resume file ({err})") from err
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ValueError(f"{path}: unknown resume format (expected format {RESUME_FORMAT})")
    return state


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def _write_rows(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    # Rewriting the whole (small) file atomically means a kill never leaves a half line.
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _fmt(r.get(k)) for k in columns} for r in rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def write_metrics_row(path: Path, row: dict[str, Any],
                      columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
    """Append ``row`` to ``path`` (metrics.csv, or timing.csv with TIMING_COLUMNS), replacing
    rows of epochs >= its epoch.

    A resumed run that redoes an epoch thus replaces that epoch's row instead of repeating it.
    """
    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"{path.name} row has unknown columns {sorted(unknown)}")
    kept = [r for r in read_metrics(path) if int(r["epoch"]) < int(row["epoch"])]
    _write_rows(path, [*kept, row], columns)


def write_metrics(path: Path, rows: list[dict[str, Any]],
                  columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
    """Write ``rows`` as the whole of ``path``."""
    _write_rows(path, rows, columns)


def truncate_metrics(path: Path, last_epoch: int,
                     columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
    """Drop rows after ``last_epoch`` (written by an epoch that never reached resume.pt)."""
    rows = read_metrics(path)
    kept = [r for r in rows if int(r["epoch"]) <= last_epoch]
    if len(kept) != len(rows):
        _write_rows(path, kept, columns)


def read_metrics(path: Path) -> list[dict[str, str]]:
    """Rows of ``metrics.csv`` as dicts of strings ([] when the file does not exist)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
