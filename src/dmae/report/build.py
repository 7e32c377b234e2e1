"""The report stage: every table, figure and the summary of a config, in one call.

``write_report(cfg)`` writes exactly ``layout.table_paths(cfg)`` and ``layout.figure_paths(cfg)``
(the outputs the workflow declares), whatever is finished: runs whose certification TSV does
not exist yet read "not run" in the tables and are left out of the figures.

It reads, for each (model, method, sigma) of the config, the certification TSV
(``layout.certify_tsv``) and the fine-tuned checkpoint's JSON metadata
(``checkpoint_json``: ``<finetune dir>/<certify.checkpoint>.json``), plus the packaged
reference_results.csv.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from dmae import layout
from dmae.certify.methods import method_settings
from dmae.config import sigma_key
from dmae.io import atomic_path, write_json
from dmae.report.analysis import Run, counts, forward_passes, load, radius_ceiling
from dmae.report.curves import best_over_sigma_curves, certified_accuracy_curves
from dmae.report.figures import plot_best_over_sigma, plot_certified_accuracy
from dmae.report.tables import (
    REFERENCE_RESULTS,
    base_classifier_table,
    best_sigma_table,
    paper_comparison_table,
    per_sigma_table,
    published_accuracy,
    read_reference,
    seed_spread_display,
    seed_spread_table,
    write_table,
)

log = logging.getLogger(__name__)


def checkpoint_json(cfg: dict, model: str, method: str, sigma: float | str) -> Path:
    """Metadata of the fine-tuned base classifier that certification uses (best or last)."""
    kind = cfg["certify"]["checkpoint"]
    return layout.finetune_dir(cfg, model, method, sigma) / f"{kind}.json"


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


def write_report(cfg: dict, reference_csv: str | Path = REFERENCE_RESULTS) -> list[Path]:
    """Write every table (CSV, Markdown, LaTeX), the summary and the figures of a validated
    config; return the paths written (``layout.table_paths`` then ``layout.figure_paths``)."""
    runs = report_runs(cfg)
    _check_paper_names(cfg, runs, reference_csv)
    dataset, radii = cfg["dataset"]["name"], cfg["report"]["radii"]
    tables = layout.results_dir(cfg) / "tables"
    figures = layout.results_dir(cfg) / "figures"

    def table(name: str) -> list[Path]:
        return [tables / f"{name}.{ext}" for ext in layout.TABLE_FORMATS]

    def figure(name: str) -> list[Path]:
        return [figures / f"{name}.{ext}" for ext in layout.FIGURE_FORMATS]

    written: list[Path] = []
    builders = {
        "certified_accuracy": lambda: per_sigma_table(runs, dataset, radii),
        "best_over_sigma": lambda: best_sigma_table(runs, dataset, radii),
        "paper_comparison": lambda: paper_comparison_table(
            runs, None, reference_csv, radii=radii,
            reference_dataset=cfg["report"]["reference_dataset"]),
        "base_classifiers": lambda: base_classifier_table(
            runs, split=cfg["certify"]["split"]),
    }
    unknown = sorted(set(layout.TABLES) - set(builders))
    if unknown:
        raise RuntimeError(f"layout.TABLES names {unknown}, which the report cannot build")
    built = {}
    for name in layout.TABLES:
        built[name] = builders[name]()
        write_table(built[name], table(name))
        written += table(name)
    if layout.has_replicates(cfg):
        spread = seed_spread_table(runs, dataset, radii, recipe_labels(cfg))
        csv, *rendered = table(layout.SEED_TABLE)
        write_table(spread, csv)
        write_table(seed_spread_display(spread), rendered, bold_columns=[])
        written += [csv, *rendered]
    summary = tables / layout.SUMMARY
    with atomic_path(summary) as tmp:
        tmp.write_text(summary_markdown(cfg, runs, reference_csv))
    written.append(summary)
    metrics = tables / layout.METRICS
    write_json(metrics, metrics_dict(built["certified_accuracy"], built["best_over_sigma"]))
    written.append(metrics)

    # The figures, and their curves in long format (layout.CURVES) for DVC plots
    reference = read_reference(reference_csv)
    reference_dataset = cfg["report"]["reference_dataset"]
    plotters = {"certified_accuracy": plot_certified_accuracy,
                "best_over_sigma": plot_best_over_sigma}
    curves = {"certified_accuracy": lambda: certified_accuracy_curves(runs, dataset),
              "best_over_sigma": lambda: best_over_sigma_curves(
                  runs, dataset, reference, reference_dataset)}
    unknown = sorted((set(layout.FIGURES) - set(plotters)) | (set(layout.CURVES) - set(curves)))
    if unknown:
        raise RuntimeError(f"layout.FIGURES/CURVES name {unknown}, which the report cannot plot")
    def published(run: Run, sigma: str | float):
        return published_accuracy(reference, run.paper, reference_dataset or run.dataset, sigma)

    for name, path in zip(layout.CURVES, layout.curve_paths(cfg), strict=True):
        write_table(curves[name](), path)
        written.append(path)
    for name in layout.FIGURES:
        plotters[name](runs, dataset, figure(name), published=published)
        written += figure(name)

    expected = layout.table_paths(cfg) + layout.figure_paths(cfg)
    if sorted(written) != sorted(expected):
        raise RuntimeError(f"the report wrote {sorted(map(str, written))} but the workflow "
                           f"declares {sorted(map(str, expected))}")
    missing = [run for run in runs if not run.done]
    log.info("report of %s: %d of %d runs certified; tables in %s, figures in %s",
             cfg["name"], len(runs) - len(missing), len(runs), tables, figures)
    return written


def recipe_labels(cfg: dict) -> dict[str, str]:
    """Each recipe's name in the seed table: its methods' shared label, else the recipe id."""
    labels: dict[str, set] = {}
    for method, spec in cfg["methods"].items():
        if spec.get("recipe"):
            labels.setdefault(spec["recipe"], set()).add(spec.get("label") or method)
    return {recipe: next(iter(names)) if len(names) == 1 else recipe
            for recipe, names in labels.items()}


def metrics_dict(per_sigma, best) -> dict:
    """Certified accuracy (%) per radius and ACR as nested numbers: {method: {"sigma_0.25":
    {...}, ..., "best_over_sigma": {...}}}, runs not done left out (JSON has no NaN)."""

    def numbers(row) -> dict:
        keys = [k for k in row.index if k.startswith("r=") or k == "ACR"]
        return {k: round(float(row[k]), 4) for k in keys if row[k] == row[k]}  # drop NaN

    out: dict[str, dict] = {}
    for _, row in per_sigma.iterrows():
        values = numbers(row)
        if values:
            out.setdefault(row["method"], {})[f"sigma_{sigma_key(row['sigma'])}"] = values
    for _, row in best.iterrows():
        values = numbers(row)
        if values:
            out.setdefault(row["method"], {})["best_over_sigma"] = values
    return out


def _check_paper_names(cfg: dict, runs: Sequence[Run], reference_csv) -> None:
    """Warn about report.paper_names that match no run or no published method."""
    names = cfg["report"]["paper_names"]
    pairs = {f"{model}/{method}" for model, method, _ in layout.runs(cfg)}
    for key in sorted(set(names) - pairs):
        log.warning("report.paper_names.%s: no such model/method in this config", key)
    reference = read_reference(reference_csv)
    compared_on = cfg["report"]["reference_dataset"] or cfg["dataset"]["name"]
    published = set(reference.loc[reference["dataset"] == compared_on, "method"])
    for paper in sorted({run.paper for run in runs if run.paper is not None} - published):
        log.warning("report.paper_names: %r is not a published %s method (%s); its runs are "
                    "listed without a paper number", paper, compared_on,
                    ", ".join(sorted(published)) or "none")


def _fmt_sigma(sigma: float) -> str:
    return f"{float(sigma):g}"


def summary_markdown(cfg: dict, runs: Sequence[Run] | None = None,
                     reference_csv: str | Path = REFERENCE_RESULTS) -> str:
    """The report's notes: the config, the certification budget and its radius ceiling per
    sigma, images certified per run, and the runs still missing."""
    runs = report_runs(cfg) if runs is None else list(runs)
    cert = cfg["certify"]
    method, sampling = method_settings(cfg)
    alpha = float(sampling["alpha"])
    n = int(sampling["n"] if method == "cohen" else sampling["n_max"] or sampling["n"])
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
        f"- certification: {_certification_text(method, sampling)}; {subset} from index "
        f"{cert['start']}; base classifier: the {cert['checkpoint']} fine-tuning checkpoint",
        f"- paper comparison: {_comparison_text(cfg, runs, reference_csv)}",
        "",
        "## Largest certifiable radius",
        "",
    ]
    if method == "cohen":
        unit = radius_ceiling(n, alpha, 1.0)
        lines.append(
            f"With n = {n:,} samples at alpha = {alpha:g}, pA_lower is at most alpha^(1/n) = "
            f"{alpha ** (1.0 / n):.6f} (every sample votes for the top class), so no radius "
            f"above sigma * Phi^-1(alpha^(1/n)) = {unit:.4f} sigma can be certified: certified "
            "accuracy at a larger radius is 0 by construction, whatever the classifier.")
        ceilings = {sigma: radius_ceiling(n, alpha, sigma) for sigma in sigmas}
    else:
        plans = {sigma: adaptive_plan(sigma, sampling) for sigma in sigmas}
        lines.append(
            f"The adaptive method splits alpha over its K looks (per sigma below; half of it "
            f"at the last one, n_max = {n:,} samples, when there are several), so pA_lower is "
            f"at most a^(1/n_max), a the last look's level, and no radius above sigma * Phi^-1 "
            "of that can be "
            "certified: certified accuracy at a larger radius is 0 by construction. ACR is not "
            "comparable between certification methods: the adaptive method stops as soon as "
            "an image's answer on its radius grid is settled, so its radii are smaller by "
            "design even where the grid answer is the same.")
        ceilings = {sigma: radius_ceiling(n, plan.levels[-1], sigma)
                    for sigma, plan in plans.items()}
    lines += ["", "| sigma | radius ceiling | report radii above it |", "|---:|---:|---|"]
    for sigma in sigmas:
        above = [f"{r:g}" for r in radii if r > ceilings[sigma]]
        looks = "" if method == "cohen" else f" (K = {len(plans[sigma].looks)} looks)"
        lines.append(f"| {_fmt_sigma(sigma)}{looks} | {ceilings[sigma]:.4f} | "
                     f"{', '.join(above) or 'none'} |")
    lines += ["", "## Certified images per run", "",
              "| method | sigma | images | correct | abstained | passes/image | status |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        if run.done:
            df = load(run.tsv)
            c, passes = counts(df), forward_passes(df)
            lines.append(f"| {run.display} | {_fmt_sigma(run.sigma)} | {c['images']:,} | "
                         f"{c['correct']:,} | {c['abstained']:,} | "
                         f"{'—' if passes is None else f'{passes:,.0f}'} | done |")
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


def _certification_text(method: str, sampling: dict) -> str:
    n0, alpha = sampling["n0"], sampling["alpha"]
    if method == "cohen":
        return (f"cohen (Cohen et al.'s CERTIFY, n estimation samples for every image), "
                f"n0 = {n0:,}, n = {sampling['n']:,}, alpha = {alpha:g}")
    grid = ", ".join(f"{r:g}" for r in sampling["radii"])
    n_max = sampling["n_max"] or sampling["n"]
    mismatch = ("; stops on a misclassified selection" if sampling["stop_on_mismatch"] else "")
    return (f"adaptive (estimation samples in rounds, each image stopped once its answer at "
            f"radii {grid} is settled; at most n_max = {n_max:,}{mismatch}), n0 = {n0:,}, "
            f"alpha = {alpha:g}")


def adaptive_plan(sigma: float, sampling: dict):
    """The adaptive method's sequential plan at ``sigma`` for a config's sampling settings."""
    from dmae.certify.adaptive import SequentialPlan

    return SequentialPlan(sigma=sigma, alpha=sampling["alpha"],
                          n_max=sampling["n_max"] or sampling["n"], radii=sampling["radii"],
                          first_look=sampling["first_look"], growth=sampling["growth"])


def _method_text(cfg: dict, method: str) -> str:
    spec = cfg["methods"][method]
    label = spec.get("label")
    return f"{method} ({label})" if label and label != method else method
