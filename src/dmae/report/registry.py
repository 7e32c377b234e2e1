"""Every table and figure of the report, each declared once, and the files they go to.

A ``Table``: its name (``tables/<name>.{csv,md,tex}``), the function that builds it from the
report's inputs, which configs have it, how Markdown and LaTeX show it, and the columns that
name a row when two runs' tables are compared (``compare``). A ``Figure``: its name
(``figures/<name>.{png,pdf}``), the function that plots it and the one that gives its curves in
long format (``tables/<name>_curves.csv``, for DVC plots). ``build.write_report`` writes what
this declares for a config, and nothing else.

Importing this module loads neither pandas nor matplotlib (each builder imports what it calls
when it runs), so the workflow and the DVC tooling can read the names and paths cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from dmae import layout

if TYPE_CHECKING:
    import pandas as pd

    from dmae.report.analysis import Run


@dataclass(frozen=True)
class ReportInputs:
    """What the builders read: a validated config, its runs and the published numbers."""

    cfg: dict
    runs: Sequence[Run]
    reference_csv: Path

    @property
    def dataset(self) -> str:
        return self.cfg["dataset"]["name"]

    @property
    def radii(self) -> list[float]:
        return self.cfg["report"]["radii"]

    @property
    def reference_dataset(self) -> str | None:
        """The dataset whose published numbers the runs compare with (None: their own)."""
        return self.cfg["report"]["reference_dataset"]

    @cached_property
    def reference(self) -> pd.DataFrame:
        from dmae.report.reference import read_reference

        return read_reference(self.reference_csv)

    def published(self, run: Run, sigma: str | float) -> pd.Series | None:
        """The paper's certified accuracy (%) by radius of ``run``'s published method at
        ``sigma`` ("best" or a noise level), None where the paper has none."""
        from dmae.report.reference import published_accuracy

        return published_accuracy(self.reference, run.paper,
                                  self.reference_dataset or run.dataset, sigma)


def every_config(cfg: dict) -> bool:
    return True


@dataclass(frozen=True)
class Table:
    name: str
    build: Callable[[ReportInputs], pd.DataFrame]
    applies: Callable[[dict], bool] = every_config  # whether a config's report has it
    # What Markdown and LaTeX show (None: the table itself); the CSV always keeps every column.
    shown: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    bold_columns: tuple[str, ...] | None = None  # None: render.default_bold_columns
    row_key: tuple[str, ...] | None = None  # columns naming a row in compare (None: not compared)


@dataclass(frozen=True)
class Figure:
    name: str
    plot: Callable[[ReportInputs, list[Path]], None]  # draws the figure into each path
    curves: Callable[[ReportInputs], pd.DataFrame]  # its curves, one row per curve and radius


def _certified_accuracy(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.tables import per_sigma_table

    return per_sigma_table(inputs.runs, inputs.dataset, inputs.radii)


def _best_over_sigma(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.tables import best_sigma_table

    return best_sigma_table(inputs.runs, inputs.dataset, inputs.radii)


def _paper_comparison(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.tables import paper_comparison_table

    return paper_comparison_table(inputs.runs, None, inputs.reference_csv, radii=inputs.radii,
                                  reference_dataset=inputs.reference_dataset)


def _base_classifiers(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.tables import base_classifier_table

    return base_classifier_table(inputs.runs, split=inputs.cfg["certify"]["split"])


def _seed_spread(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.runs import recipe_labels
    from dmae.report.tables import seed_spread_table

    return seed_spread_table(inputs.runs, inputs.dataset, inputs.radii,
                             recipe_labels(inputs.cfg))


def _seed_spread_shown(table: pd.DataFrame) -> pd.DataFrame:
    from dmae.report.tables import seed_spread_display

    return seed_spread_display(table)


def _pretraining_ablation(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.ablation import ablation_table

    return ablation_table(inputs.cfg, inputs.runs, inputs.radii)


def _has_ablation(cfg: dict) -> bool:
    from dmae.report.ablation import has_pretraining_pairs

    return bool(cfg["report"].get("ablation")) and has_pretraining_pairs(cfg)


def _compares_with_the_paper(cfg: dict) -> bool:
    return cfg["report"]["reference_dataset"] is not None


def _paper_table(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.paper_tables import paper_table

    return paper_table(inputs.cfg, inputs.runs, inputs.reference)


def _paper_per_sigma(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.paper_tables import per_sigma_paper_table

    return per_sigma_paper_table(inputs.cfg, inputs.runs, inputs.reference)


SEED_TABLE = "seed_spread"  # the README quotes it from a seed study's report

TABLES: tuple[Table, ...] = (
    Table("certified_accuracy", _certified_accuracy, row_key=("method", "sigma")),
    Table("best_over_sigma", _best_over_sigma, row_key=("method",)),
    Table("paper_comparison", _paper_comparison),
    Table("base_classifiers", _base_classifiers, row_key=("method", "sigma")),
    # The paper's Table 1 or 3 in its layout (#params, extra data), and Cohen et al.'s
    # per-sigma table, each with this run's rows (configs compared with a paper dataset)
    Table("paper_table", _paper_table, applies=_compares_with_the_paper, bold_columns=()),
    Table("paper_per_sigma", _paper_per_sigma, applies=_compares_with_the_paper,
          bold_columns=()),
    # DMAE against MAE pretraining, the same downstream recipe (report.ablation)
    Table("pretraining_ablation", _pretraining_ablation, applies=_has_ablation,
          row_key=("downstream", "method", "sigma")),
    # mean (min–max) over the seeds, nothing in bold: no cell is one run's best
    Table(SEED_TABLE, _seed_spread, applies=layout.has_replicates, shown=_seed_spread_shown,
          bold_columns=()),
)


def _plot_certified_accuracy(inputs: ReportInputs, paths: list[Path]) -> None:
    from dmae.report.figures import plot_certified_accuracy

    plot_certified_accuracy(inputs.runs, inputs.dataset, paths, published=inputs.published)


def _certified_accuracy_curves(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.curves import certified_accuracy_curves

    return certified_accuracy_curves(inputs.runs, inputs.dataset)


def _plot_best_over_sigma(inputs: ReportInputs, paths: list[Path]) -> None:
    from dmae.report.figures import plot_best_over_sigma

    plot_best_over_sigma(inputs.runs, inputs.dataset, paths, published=inputs.published)


def _best_over_sigma_curves(inputs: ReportInputs) -> pd.DataFrame:
    from dmae.report.curves import best_over_sigma_curves

    return best_over_sigma_curves(inputs.runs, inputs.dataset, inputs.reference,
                                  inputs.reference_dataset)


FIGURES: tuple[Figure, ...] = (
    Figure("certified_accuracy", _plot_certified_accuracy, _certified_accuracy_curves),
    Figure("best_over_sigma", _plot_best_over_sigma, _best_over_sigma_curves),
)


def tables_of(cfg: dict) -> list[Table]:
    """The tables a config's report has, in the order they are written."""
    return [table for table in TABLES if table.applies(cfg)]


def table_names(cfg: dict) -> tuple[str, ...]:
    return tuple(table.name for table in tables_of(cfg))


def figure_names() -> tuple[str, ...]:
    return tuple(figure.name for figure in FIGURES)


def curve_names() -> tuple[str, ...]:
    """The figures whose curves are written as tables: every figure."""
    return figure_names()


def compared_tables() -> dict[str, tuple[str, ...]]:
    """Name -> row key of each table two runs are compared on."""
    return {table.name: table.row_key for table in TABLES if table.row_key is not None}


def table_files(cfg: dict, name: str) -> list[Path]:
    return [layout.path(cfg, "table", table=name, format=format)
            for format in layout.TABLE_FORMATS]


def curve_file(cfg: dict, name: str) -> Path:
    return layout.path(cfg, "curves", figure=name)


def figure_files(cfg: dict, name: str) -> list[Path]:
    return [layout.path(cfg, "figure", figure=name, format=format)
            for format in layout.FIGURE_FORMATS]


def table_paths(cfg: dict) -> list[Path]:
    """Every file of the tables folder the report writes: each table in each format, the
    summary, the metrics JSON and the figures' curves."""
    return [path for name in table_names(cfg) for path in table_files(cfg, name)] + [
        layout.path(cfg, "report_file", file=layout.SUMMARY),
        layout.path(cfg, "report_file", file=layout.METRICS), *curve_paths(cfg)]


def curve_paths(cfg: dict) -> list[Path]:
    return [curve_file(cfg, name) for name in curve_names()]


def figure_paths(cfg: dict) -> list[Path]:
    return [path for name in figure_names() for path in figure_files(cfg, name)]
