"""The report's notes (``tables/summary.md``): the config, the certification budget and the
largest radius it can certify per sigma, the images certified per run, and the runs missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dmae.certify.methods import from_config
from dmae.report.analysis import Run, counts, forward_passes, load, mismatches, radius_ceiling
from dmae.report.reference import REFERENCE_RESULTS, read_reference
from dmae.report.runs import report_runs


def _fmt_sigma(sigma: float) -> str:
    return f"{float(sigma):g}"


def summary_markdown(cfg: dict, runs: Sequence[Run] | None = None,
                     reference_csv: str | Path = REFERENCE_RESULTS) -> str:
    """The report's notes: the config, the certification budget and its radius ceiling per
    sigma, images certified per run, and the runs still missing."""
    runs = report_runs(cfg) if runs is None else list(runs)
    cert = cfg["certify"]
    method = from_config(cfg)
    radii = [float(r) for r in cfg["report"]["radii"]]
    sigmas = sorted({float(s) for s in cfg["sigmas"]})
    stride = int(cert["stride"])
    split = {"test": "test", "val": "validation"}[cfg["certify"]["split"]]
    subset = f"one {split} image in {stride:,}" if stride > 1 else f"every {split} image"
    lines = [
        f"# Report summary: {cfg['name']}",
        "",
        f"- dataset: {cfg['dataset']['name']}",
        f"- models: {', '.join(cfg['models'])}",
        f"- methods: {', '.join(_method_text(cfg, m) for m in cfg['methods'])}",
        f"- sigmas: {', '.join(_fmt_sigma(s) for s in sigmas)}",
        f"- certification: {method.describe()}; {subset} from index "
        f"{cert['start']}; base classifier: the {cert['checkpoint']} fine-tuning checkpoint",
        f"- paper comparison: {_comparison_text(cfg, runs, reference_csv)}",
        "",
        "## Largest certifiable radius",
        "",
    ]

    def largest_radius(sigma: float) -> float:  # the certification method's, at sigma
        ceiling = method.ceiling(sigma)
        return radius_ceiling(ceiling.samples, ceiling.level, sigma)

    lines.append(method.ceiling_text(largest_radius))
    lines += ["", "| sigma | radius ceiling | report radii above it |", "|---:|---:|---|"]
    for sigma in sigmas:
        ceiling = largest_radius(sigma)
        above = [f"{r:g}" for r in radii if r > ceiling]
        lines.append(f"| {_fmt_sigma(sigma)}{method.ceiling(sigma).note} | {ceiling:.4f} | "
                     f"{', '.join(above) or 'none'} |")
    lines += ["", "## Certified images per run", "",
              "| method | sigma | images | correct | abstained | passes/image | status |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        if run.done:
            df = load(run.tsv)
            c, passes, stopped = counts(df), forward_passes(df), mismatches(df)
            status = f"done; {stopped:,} misclassified, stopped after selection" \
                if stopped else "done"
            lines.append(f"| {run.display} | {_fmt_sigma(run.sigma)} | {c['images']:,} | "
                         f"{c['correct']:,} | {c['abstained']:,} | "
                         f"{'—' if passes is None else f'{passes:,.0f}'} | {status} |")
        else:
            lines.append(f"| {run.display} | {_fmt_sigma(run.sigma)} | — | — | — | — | "
                         "not run |")
    missing = [run for run in runs if not run.done]
    lines += ["", "## Missing runs", ""]
    if not missing:
        lines.append("None: every run of the config is certified.")
    for run in missing:
        checkpoint = ""
        if run.checkpoint is not None:
            state = "exists" if run.checkpoint.is_file() else "missing too"
            checkpoint = f"; fine-tuned checkpoint `{run.checkpoint}` {state}"
        lines.append(f"- {run.display}, sigma {_fmt_sigma(run.sigma)}: no certification "
                     f"`{run.tsv}`{checkpoint}")
    return "\n".join(lines) + "\n"


def _comparison_text(cfg: dict, runs: Sequence[Run], reference_csv) -> str:
    reference = read_reference(reference_csv)
    datasets = list(dict.fromkeys(reference["dataset"]))
    compared_on = cfg["report"]["reference_dataset"] or cfg["dataset"]["name"]
    text = f"every published method of {', '.join(datasets)}"
    if compared_on not in datasets:
        return (f"{text}; the paper reports no {compared_on} results, so this config's runs "
                "are listed with — as the paper's number")
    mapped = {run.display: run.paper for run in runs if run.paper is not None}
    if not mapped:
        return (f"{text}; no run of this config maps to a published {compared_on} method "
                "(set report.paper_names)")
    pairs = ", ".join(f"{label} → {paper}" for label, paper in mapped.items())
    return f"{text}; this config's runs compare with the {compared_on} rows: {pairs}"


def _method_text(cfg: dict, method: str) -> str:
    spec = cfg["methods"][method]
    label = spec.get("label")
    return f"{method} ({label})" if label and label != method else method
