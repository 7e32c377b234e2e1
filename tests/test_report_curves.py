"""The long-format curves the report writes for DVC plots, and the paper's points on the
figures: the same numbers as the figures and tables, by hand on five-image certifications."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO
from test_report import REFERENCE, runs  # noqa: F401  (runs: a fixture)

from dmae import config as cfglib
from dmae import layout
from dmae.report import registry
from dmae.report.analysis import Run, certified_accuracy, load
from dmae.report.curves import (
    BEST_COLUMNS,
    CURVE_COLUMNS,
    PAPER,
    THIS_RUN,
    VALUE,
    best_over_sigma_curves,
    certified_accuracy_curves,
)
from dmae.report.figures import plot_best_over_sigma, plot_certified_accuracy
from dmae.report.reference import published_accuracy, read_reference


@pytest.fixture
def reference(tmp_path):
    path = tmp_path / "reference.csv"
    path.write_text(REFERENCE)
    return read_reference(path)


def test_certified_accuracy_curves_are_the_figure_curves(runs):  # noqa: F811
    table = certified_accuracy_curves(runs, "cifar10", points=11)
    assert list(table.columns) == CURVE_COLUMNS
    assert CURVE_COLUMNS[3:5] == [layout.CURVE_X, layout.CURVE_Y]  # what dvc.yaml plots
    done = [run for run in runs if run.done]
    assert list(dict.fromkeys(table["curve"])) == [f"{r.display}, σ={r.sigma:g}" for r in done]
    grid = np.linspace(0.0, 1.05 * 1.2, 11)  # 1.2: the largest certified radius of the runs
    for run in done:
        rows = table[table["curve"] == f"{run.display}, σ={run.sigma:g}"]
        assert rows["radius"].to_numpy() == pytest.approx(grid)
        expected = 100 * certified_accuracy(load(run.tsv), grid).to_numpy()
        assert rows[VALUE].to_numpy() == pytest.approx(expected)
        assert (rows["lo"] <= rows[VALUE]).all() and (rows[VALUE] <= rows["hi"]).all()
    # nothing finished yet: the file still exists, with its columns and no rows
    empty = certified_accuracy_curves(runs, "imagenet")
    assert list(empty.columns) == CURVE_COLUMNS and empty.empty


def test_best_over_sigma_curves_take_the_envelope_and_add_the_paper(runs, reference):  # noqa: F811
    table = best_over_sigma_curves(runs, "cifar10", reference, points=11)
    assert list(table.columns) == BEST_COLUMNS
    ours = table[table["source"] == THIS_RUN]
    dmae = [run for run in runs if run.method == "dmae"]
    grid = np.linspace(0.0, 1.05 * 1.2, 11)
    envelope = np.max([certified_accuracy(load(r.tsv), grid) for r in dmae], axis=0)
    rows = ours[ours["method"] == "DMAE ViT-B"]
    assert rows[VALUE].to_numpy() == pytest.approx(100 * envelope)
    assert set(ours["method"]) == {"RS (Cohen et al.)", "DMAE ViT-B"}  # MAE: not run
    # the published points of the methods the runs reproduce, in the runs' names and colour
    paper = table[table["source"] == PAPER]
    assert paper[["curve", "method", "radius", VALUE]].values.tolist() == [
        ["RS (Cohen et al.) (paper)", "RS (Cohen et al.)", 0.25, 61.0],
        ["RS (Cohen et al.) (paper)", "RS (Cohen et al.)", 0.5, 43.0],
        ["DMAE ViT-B (paper)", "DMAE ViT-B", 0.25, 79.2],
        ["DMAE ViT-B (paper)", "DMAE ViT-B", 0.5, 64.6]]
    assert paper[["lo", "hi"]].isna().all().all()
    # compared as ImageNet (reference_dataset), only DMAE has published ImageNet numbers
    as_imagenet = best_over_sigma_curves(runs, "cifar10", reference, "imagenet", points=11)
    assert as_imagenet[as_imagenet["source"] == PAPER]["radius"].tolist() == [0.5, 1.0]
    assert (best_over_sigma_curves(runs, "cifar10", None)["source"] == THIS_RUN).all()


def test_published_accuracy_picks_method_dataset_and_sigma(reference):
    best = published_accuracy(reference, "RS (Cohen et al.)", "cifar10")
    assert best.to_dict() == {0.25: 61.0, 0.5: 43.0}
    assert published_accuracy(reference, "RS (Cohen et al.)", "cifar10", 0.5).to_dict() == {
        0.25: 55.0}
    assert published_accuracy(reference, "RS (Cohen et al.)", "cifar10", 1.0) is None
    assert published_accuracy(reference, "RS (Cohen et al.)", "imagenet") is None
    assert published_accuracy(reference, None, "cifar10") is None


def test_figures_mark_the_papers_points_only_where_it_has_some(tmp_path, runs, reference):  # noqa: F811
    def png(plot, name, dataset=None, runs=runs) -> bytes:  # noqa: F811
        published = None if dataset is None else (
            lambda run, sigma: published_accuracy(reference, run.paper, dataset, sigma))
        plot(runs, "cifar10", tmp_path / name, published=published)
        return (tmp_path / name).read_bytes()

    plain = png(plot_best_over_sigma, "plain.png")
    assert png(plot_best_over_sigma, "marked.png", "cifar10") != plain
    # a reference with nothing for these runs draws the same figure as none
    assert png(plot_best_over_sigma, "other.png", "svhn") == plain
    # the finished runs are at sigmas the reference has no per-sigma number for
    assert png(plot_certified_accuracy, "a.png") == png(plot_certified_accuracy, "b.png",
                                                         "cifar10")
    # a per-sigma panel marks only the numbers published at that sigma (Cohen's 0.5)
    only_rs_050 = [Run("cifar10", "rs", 0.5, runs[0].tsv, label="RS", paper="RS (Cohen et al.)")]
    assert png(plot_certified_accuracy, "c.png", runs=only_rs_050) != png(
        plot_certified_accuracy, "d.png", "cifar10", runs=only_rs_050)
    at_025 = [Run("cifar10", "rs", 0.25, runs[0].tsv, label="RS", paper="RS (Cohen et al.)")]
    assert png(plot_certified_accuracy, "e.png", runs=at_025) == png(
        plot_certified_accuracy, "f.png", "cifar10", runs=at_025)


def test_the_curves_are_report_outputs_in_the_tables_folder(tmp_path):
    cfg = cfglib.load(REPO / "config" / "smoke.yaml")
    cfg["paths"]["results"] = str(tmp_path)
    paths = registry.curve_paths(cfg)
    assert [p.name for p in paths] == [f"{n}_curves.csv" for n in registry.curve_names()]
    assert set(paths) <= set(registry.table_paths(cfg))  # the report rule's outputs
