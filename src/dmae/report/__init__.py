"""Certified-accuracy analysis, tables and figures for the certification TSVs."""

from dmae.report.analysis import (
    Run,
    accuracy_by_sigma,
    as_runs,
    average_certified_radius,
    best_over_sigma,
    certified_accuracy,
)
from dmae.report.tables import (
    best_sigma_table,
    paper_comparison_table,
    per_sigma_table,
    to_latex,
    to_markdown,
    write_table,
)

__all__ = [
    "Run",
    "accuracy_by_sigma",
    "as_runs",
    "average_certified_radius",
    "best_over_sigma",
    "best_sigma_table",
    "certified_accuracy",
    "paper_comparison_table",
    "per_sigma_table",
    "to_latex",
    "to_markdown",
    "write_table",
]
