"""The report stage: every table, figure and the summary of a config, in one call.

``write_report(cfg)`` writes exactly what ``registry`` declares for the config (the tables and
figures, their curves), the summary and the metrics JSON, whatever is finished: runs whose
certification TSV does not exist yet read "not run" in the tables and are left out of the
figures. It reads the runs of ``runs.report_runs`` and the packaged reference_results.csv.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dmae import layout
from dmae.config import sigma_key
from dmae.io import atomic_path, write_json
from dmae.report import registry
from dmae.report.reference import REFERENCE_RESULTS
from dmae.report.render import write_table
from dmae.report.runs import report_runs
from dmae.report.summary import summary_markdown

log = logging.getLogger(__name__)


def write_report(cfg: dict, reference_csv: str | Path = REFERENCE_RESULTS) -> list[Path]:
    """Write every table (CSV, Markdown, LaTeX), the summary and the figures of a validated
    config; return the paths written (``registry.table_paths`` then ``registry.figure_paths``)."""
    runs = report_runs(cfg)
    inputs = registry.ReportInputs(cfg, runs, Path(reference_csv))
    _check_paper_names(inputs)
    tables = layout.results_dir(cfg) / "tables"
    figures = layout.results_dir(cfg) / "figures"

    written: list[Path] = []
    built = {}
    for table in registry.tables_of(cfg):
        built[table.name] = table.build(inputs)
        csv, *rendered = registry.table_files(cfg, table.name)
        write_table(built[table.name], csv)
        shown = built[table.name] if table.shown is None else table.shown(built[table.name])
        write_table(shown, rendered, bold_columns=table.bold_columns)
        written += [csv, *rendered]
    summary = tables / layout.SUMMARY
    with atomic_path(summary) as tmp:
        tmp.write_text(summary_markdown(cfg, runs, reference_csv))
    written.append(summary)
    metrics = tables / layout.METRICS
    write_json(metrics, metrics_dict(built["certified_accuracy"], built["best_over_sigma"]))
    written.append(metrics)

    for figure in registry.FIGURES:  # the curves go to tables/, for DVC plots
        path = registry.curve_file(cfg, figure.name)
        write_table(figure.curves(inputs), path)
        written.append(path)
    for figure in registry.FIGURES:
        paths = registry.figure_files(cfg, figure.name)
        figure.plot(inputs, paths)
        written += paths

    # the outputs the workflow expects (the same paths: tests/test_report_registry.py)
    expected = registry.table_paths(cfg) + registry.figure_paths(cfg)
    if sorted(written) != sorted(expected):
        raise RuntimeError(f"the report wrote {sorted(map(str, written))} but the registry "
                           f"declares {sorted(map(str, expected))}")
    missing = [run for run in runs if not run.done]
    log.info("report of %s: %d of %d runs certified; tables in %s, figures in %s",
             cfg["name"], len(runs) - len(missing), len(runs), tables, figures)
    return written


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


def _check_paper_names(inputs: registry.ReportInputs) -> None:
    """Warn about report.paper_names that match no run or no published method."""
    cfg, reference = inputs.cfg, inputs.reference
    names = cfg["report"]["paper_names"]
    pairs = {f"{model}/{method}" for model, method, _ in layout.runs(cfg)}
    for key in sorted(set(names) - pairs):
        log.warning("report.paper_names.%s: no such model/method in this config", key)
    compared_on = inputs.reference_dataset or inputs.dataset
    published = set(reference.loc[reference["dataset"] == compared_on, "method"])
    for paper in sorted({run.paper for run in inputs.runs if run.paper is not None}
                        - published):
        log.warning("report.paper_names: %r is not a published %s method (%s); its runs are "
                    "listed without a paper number", paper, compared_on,
                    ", ".join(sorted(published)) or "none")
