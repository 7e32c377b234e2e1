"""The paper's ablation of the pretraining: DMAE against plain MAE, downstream alike.

Two methods of a config form a pair when they differ only in their pretraining, one with noise
(DMAE, sigma > 0) and one without (MAE, sigma 0): the same fine-tuning recipe (consistency
regularization or not) or the same linear probe, on the same models. The table shows each
pair per model and sigma, the DMAE row above the MAE row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from dmae import layout
from dmae.report.analysis import Run
from dmae.report.tables import per_sigma_table


@dataclass(frozen=True)
class Pair:
    downstream: str  # "linear probe", "fine-tuning + CR" or "fine-tuning"
    noisy: str  # the DMAE method's id in the config
    clean: str  # the MAE method's


def downstream(spec: dict) -> str:
    if spec.get("linprobe"):
        return "linear probe"
    return "fine-tuning + CR" if spec["consistency"] else "fine-tuning"


def pretraining_pairs(cfg: dict) -> list[Pair]:
    """The config's DMAE/MAE pairs, in the order of its methods."""
    def noise(method: str) -> float | None:
        pre = cfg["methods"][method]["pretraining"]
        return None if pre is None else cfg["pretrainings"][pre]["sigma"]

    def downstream_recipe(method: str) -> dict:
        return {k: v for k, v in cfg["methods"][method].items()
                if k not in ("pretraining", "label", "models")}

    pairs = []
    for noisy in cfg["methods"]:
        for clean in cfg["methods"]:
            if ((noise(noisy) or 0) > 0 and noise(clean) == 0
                    and downstream_recipe(noisy) == downstream_recipe(clean)):
                pairs.append(Pair(downstream(cfg["methods"][noisy]), noisy, clean))
    return pairs


def has_pretraining_pairs(cfg: dict) -> bool:
    return bool(pretraining_pairs(cfg))


def ablation_table(cfg: dict, runs: Sequence[Run], radii: Sequence[float]) -> pd.DataFrame:
    """One row per (pair, model, sigma, pretraining): the per-sigma table's columns, led by
    the downstream setting (and the model, when the config has several)."""
    several_models = len(cfg["models"]) > 1
    parts = []
    for pair in pretraining_pairs(cfg):
        for model in cfg["models"]:
            if not all(layout.runs_for(cfg, m, model) for m in (pair.noisy, pair.clean)):
                continue
            ids = [f"{model}/{m}" if several_models else m for m in (pair.noisy, pair.clean)]
            chosen = sorted((run for run in runs if run.method in ids),
                            key=lambda run: (run.sigma, ids.index(run.method)))
            table = per_sigma_table(chosen, cfg["dataset"]["name"], radii)
            table = table.sort_values("sigma", kind="stable")  # per sigma, DMAE above MAE
            table.insert(0, "downstream", pair.downstream)
            parts.append(table)
    return pd.concat(parts, ignore_index=True)
