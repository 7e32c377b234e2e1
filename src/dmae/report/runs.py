"""A config's certifications as the report's runs: where each TSV and checkpoint is and how
tables and figures label it.

For each (model, method, sigma) of the config: the certification TSV (``layout.certify_tsv``)
and the fine-tuned checkpoint's JSON metadata (``checkpoint_json``:
``<finetune dir>/<certify.checkpoint>.json``).
"""

from __future__ import annotations

from pathlib import Path

from dmae import layout
from dmae.report.analysis import Run


def checkpoint_json(cfg: dict, model: str, method: str, sigma: float | str) -> Path:
    """Metadata of the fine-tuned base classifier that certification uses (best or last)."""
    return layout.finetuned(cfg, model, method, sigma, format="json")


def report_runs(cfg: dict) -> list[Run]:
    """Every certification of the config as report runs, labelled for tables and figures.

    With several models the method id is ``model/method`` and the label ``label (model)``;
    the paper name comes from ``report.paper_names["model/method"]``.
    """
    several_models = len(cfg["models"]) > 1
    names = cfg["report"]["paper_names"]
    labels = [spec.get("label") or m for m, spec in cfg["methods"].items()]
    runs = []
    for model, method, sigma in layout.runs(cfg):
        label = cfg["methods"][method].get("label") or method
        if labels.count(label) > 1:  # replicates share their recipe's label
            label = f"{label} ({method})"
        runs.append(Run(
            dataset=cfg["dataset"]["name"],
            method=f"{model}/{method}" if several_models else method,
            sigma=float(sigma),
            tsv=layout.certify_tsv(cfg, model, method, sigma),
            label=f"{label} ({model})" if several_models else label,
            paper=names.get(f"{model}/{method}"),
            checkpoint=checkpoint_json(cfg, model, method, sigma),
            recipe=cfg["methods"][method].get("recipe"),
        ))
    return runs


def recipe_labels(cfg: dict) -> dict[str, str]:
    """Each recipe's name in the seed table: its methods' shared label, else the recipe id."""
    labels: dict[str, set] = {}
    for method, spec in cfg["methods"].items():
        if spec.get("recipe"):
            labels.setdefault(spec["recipe"], set()).add(spec.get("label") or method)
    return {recipe: next(iter(names)) if len(names) == 1 else recipe
            for recipe, names in labels.items()}
