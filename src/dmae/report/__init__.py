"""Certified-accuracy analysis, tables and figures for the certification TSVs.

``dmae.report.build.write_report(cfg)`` is the report stage (imported lazily: it loads
matplotlib).
"""

from dmae.report.analysis import (
    Run,
    accuracy_by_sigma,
    as_runs,
    average_certified_radius,
    best_over_sigma,
    certified_accuracy,
    radius_ceiling,
)
from dmae.report.tables import (
    NOT_REPORTED,
    NOT_RUN,
    REFERENCE_RESULTS,
    base_classifier_table,
    best_sigma_table,
    paper_comparison_table,
    per_sigma_table,
    read_reference,
    to_latex,
    to_markdown,
    write_table,
)

__all__ = [
    "NOT_REPORTED",
    "NOT_RUN",
    "REFERENCE_RESULTS",
    "Run",
    "accuracy_by_sigma",
    "as_runs",
    "average_certified_radius",
    "base_classifier_table",
    "best_over_sigma",
    "best_sigma_table",
    "certified_accuracy",
    "paper_comparison_table",
    "per_sigma_table",
    "radius_ceiling",
    "read_reference",
    "to_latex",
    "to_markdown",
    "write_table",
]
