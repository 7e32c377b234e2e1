"""Analysis, tables and figures against small hand-written certification TSVs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmae.report.analysis import Run, average_certified_radius, best_over_sigma, certified_accuracy
from dmae.report.figures import (
    plot_best_over_sigma,
    plot_certified_accuracy,
    reconstruction_grid,
)
from dmae.report.render import to_latex, to_markdown, write_table
from dmae.report.tables import best_sigma_table, paper_comparison_table, per_sigma_table

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"

# Five images: (label, predict, radius, correct)
DMAE_025 = [(1, 1, 0.8, 1), (2, 2, 0.3, 1), (0, -1, 0.0, 0), (4, 3, 1.2, 0), (5, 5, 0.0, 1)]
DMAE_050 = [(1, 1, 1.1, 1), (2, -1, 0.0, 0), (0, 0, 0.6, 1), (4, 4, 0.2, 1), (5, 1, 0.4, 0)]
RS_025 = [(1, 1, 0.5, 1), (2, 0, 0.9, 0), (0, -1, 0.0, 0), (4, 4, 0.1, 1), (5, -1, 0.0, 0)]
RADII = [0.0, 0.25, 0.5, 1.0]


def write_tsv(path: Path, rows) -> Path:
    lines = [f"{i}\t{lab}\t{pred}\t{rad!r}\t{cor}\t0.1\n"
             for i, (lab, pred, rad, cor) in enumerate(rows)]
    path.write_text(HEADER + "".join(lines))
    return path


RS = {"label": "RS (Cohen et al.)", "paper": "RS (Cohen et al.)"}
DMAE = {"label": "DMAE ViT-B", "paper": "DMAE ViT-B"}
MAE = {"label": "MAE ViT-B", "paper": None}  # the paper has no number for it


@pytest.fixture
def runs(tmp_path):
    return [
        Run("cifar10", "rs", 0.25, write_tsv(tmp_path / "rs_025.tsv", RS_025), **RS),
        Run("cifar10", "rs", 0.5, tmp_path / "rs_050.tsv", **RS),  # not run yet
        Run("cifar10", "dmae", 0.25, write_tsv(tmp_path / "dmae_025.tsv", DMAE_025), **DMAE),
        Run("cifar10", "dmae", 0.5, write_tsv(tmp_path / "dmae_050.tsv", DMAE_050), **DMAE),
        Run("cifar10", "mae", 0.25, tmp_path / "mae_025.tsv", **MAE),  # not run yet
    ]


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["label", "predict", "radius", "correct"])


def test_certified_accuracy_and_acr_by_hand():
    df = frame(DMAE_025)
    acc = certified_accuracy(df, RADII)
    # correct & radius >= r: r=0 -> {0,1,4}; 0.25 -> {0,1}; 0.5 -> {0}; 1.0 -> {}
    assert list(acc) == [3 / 5, 2 / 5, 1 / 5, 0.0]
    assert average_certified_radius(df) == pytest.approx((0.8 + 0.3) / 5)
    # the wrong prediction with radius 1.2 never counts
    assert certified_accuracy(df, [1.2])[1.2] == 0.0


def test_best_over_sigma_envelope_by_hand():
    curves = pd.DataFrame([certified_accuracy(frame(DMAE_025), RADII),
                           certified_accuracy(frame(DMAE_050), RADII)], index=[0.25, 0.5])
    # sigma 0.5: r=0 -> {0,2,3}; 0.25 -> {0,2}; 0.5 -> {0,2}; 1.0 -> {0}
    assert list(best_over_sigma(curves)) == [3 / 5, 2 / 5, 2 / 5, 1 / 5]


def without_intervals(text: str) -> str:
    """A rendered table with its " ±h" parts removed (checked on their own below)."""
    return re.sub(r" ±[0-9.]+", "", text)


def test_cells_carry_clopper_pearson_intervals(runs):
    """Intervals against R's binom.test(k, 5)$conf.int, an independent implementation."""
    table = per_sigma_table(runs, "cifar10", RADII)
    rs = table.iloc[0]  # 2 of 5 correct at r=0, 0 of 5 at r=1
    assert (rs["r=0 lo"], rs["r=0 hi"]) == pytest.approx((5.274495, 85.33672), abs=1e-4)
    assert (rs["r=1 lo"], rs["r=1 hi"]) == pytest.approx((0.0, 52.18238), abs=1e-4)
    dmae = table.iloc[2]  # 3 of 5
    assert (dmae["r=0 lo"], dmae["r=0 hi"]) == pytest.approx((14.66328, 94.72550), abs=1e-4)
    assert rs["ACR lo"] < rs["ACR"] < rs["ACR hi"]
    md = to_markdown(table)
    # the larger side of the interval is shown: 85.3 - 40.0 = 45.3
    assert "| RS (Cohen et al.) | 0.25 | 5 | 2 | 2 | cohen | — | 40.0 ±45.3 |" in md
    best = best_sigma_table(runs, "cifar10", RADII)
    assert best.iloc[1]["r=1 hi"] == pytest.approx(71.64179, abs=1e-4)  # 1 of 5 (sigma 0.5)


def test_per_sigma_table_and_bold(runs):
    table = per_sigma_table(runs, "cifar10", RADII)
    assert list(table["method"]) == [RS["label"]] * 2 + [DMAE["label"]] * 2 + [MAE["label"]]
    assert list(table["sigma"]) == [0.25, 0.5, 0.25, 0.5, 0.25]
    values = ["r=0", "r=0.25", "r=0.5", "r=1", "ACR"]
    assert list(table.columns) == ["method", "sigma", "images", "correct", "abstained",
                                   "certification", "passes/image",
                                   *[c for v in values for c in (v, f"{v} lo", f"{v} hi")]]
    # these hand-made TSVs have no sidecar (cohen, as before methods were recorded) and no
    # sample counts
    rs = table.iloc[0]
    assert (rs["images"], rs["correct"], rs["abstained"]) == (5, 2, 2)
    assert list(table.iloc[2][["r=0", "r=0.25", "r=0.5", "r=1"]]) == [60.0, 40.0, 20.0, 0.0]
    assert list(table.iloc[3][["r=0", "r=0.25", "r=0.5", "r=1"]]) == [60.0, 40.0, 40.0, 20.0]
    assert np.isnan(table.iloc[1]["r=0"])

    md = [without_intervals(line) for line in to_markdown(table).splitlines()]
    assert md[1] == "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    # dmae 0.25 and 0.5 tie at r=0 and r=0.25 (both bold); 0.5 alone is best at r=0.5, r=1, ACR
    assert md[2] == ("| RS (Cohen et al.) | 0.25 | 5 | 2 | 2 | cohen | — | 40.0 | 20.0 | 20.0 "
                     "| 0.0 | 0.120 |")
    assert md[3].startswith("| RS (Cohen et al.) | 0.5 | not run |")
    assert md[4] == ("| DMAE ViT-B | 0.25 | 5 | 3 | 1 | cohen | — | **60.0** | **40.0** | 20.0 "
                     "| 0.0 | 0.220 |")
    assert md[5] == ("| DMAE ViT-B | 0.5 | 5 | 3 | 1 | cohen | — | **60.0** | **40.0** | **40.0** "
                     "| **20.0** | **0.380** |")

    tex = [without_intervals(line) for line in to_latex(table).splitlines()]
    assert tex[0] == r"\begin{tabular}{lrrrrlrrrrrr}"
    assert r"DMAE ViT-B & 0.5 & 5 & 3 & 1 & cohen & — & \textbf{60.0} & \textbf{40.0} & " \
           r"\textbf{40.0} & \textbf{20.0} & \textbf{0.380} \\" in tex
    assert r"RS (Cohen et al.) & 0.25 & 5 & 2 & 2 & cohen & — & 40.0 & 20.0 & 20.0 & 0.0 & " \
           r"0.120 \\" in tex


def test_best_sigma_table(runs):
    table = best_sigma_table(runs, "cifar10", RADII)
    assert list(table["method"]) == [RS["label"], DMAE["label"], MAE["label"]]
    assert list(table["sigmas"]) == ["0.25", "0.25,0.5", ""]
    assert list(table.iloc[1][["r=0", "r=0.25", "r=0.5", "r=1"]]) == [60.0, 40.0, 40.0, 20.0]
    assert table.iloc[1]["ACR"] == pytest.approx(0.38)
    md = without_intervals(to_markdown(table))
    assert "| DMAE ViT-B | 0.25,0.5 | **60.0** | **40.0** | **40.0** | **20.0** | **0.380** |" in md
    assert "| MAE ViT-B |  | not run | not run | not run | not run | not run |" in md


REFERENCE = (
    "table,dataset,method,params,extra_data,sigma,radius,certified_accuracy_pct,source\n"
    "t3,cifar10,RS (Cohen et al.),1.7M,no,best,0.25,61.0,x\n"
    "t3,cifar10,RS (Cohen et al.),1.7M,no,best,0.5,43.0,x\n"
    "t3,cifar10,DMAE ViT-B,87M,yes,best,0.25,79.2,x\n"
    "t3,cifar10,DMAE ViT-B,87M,yes,best,0.5,64.6,x\n"
    "t1,imagenet,DMAE ViT-B,87M,no,best,0.5,69.6,x\n"
    "t1,imagenet,DMAE ViT-B,87M,no,best,1.0,57.9,x\n"
    "c3,cifar10,RS (Cohen et al.),1.7M,no,0.5,0.25,55.0,x\n")


def test_paper_comparison_keeps_runs_not_done(tmp_path, runs):
    reference = tmp_path / "reference.csv"
    reference.write_text(REFERENCE)
    table = paper_comparison_table(runs, "cifar10", reference)
    assert list(table.columns) == ["dataset", "method", "radius", "paper %", "this run %", "run"]
    assert table.values.tolist() == [
        ["cifar10", "RS (Cohen et al.)", 0.25, "61.0", "20.0", "RS (Cohen et al.)"],
        ["cifar10", "RS (Cohen et al.)", 0.5, "43.0", "20.0", "RS (Cohen et al.)"],
        ["cifar10", "DMAE ViT-B", 0.25, "79.2", "40.0", "DMAE ViT-B"],
        ["cifar10", "DMAE ViT-B", 0.5, "64.6", "40.0", "DMAE ViT-B"],
        ["cifar10", "MAE ViT-B", 0.25, "—", "not run", "MAE ViT-B"],  # no paper number
        ["cifar10", "MAE ViT-B", 0.5, "—", "not run", "MAE ViT-B"],
    ]
    # the per-sigma comparison with Cohen et al.'s table: only the runs at that sigma count
    per_sigma = paper_comparison_table(runs, "cifar10", reference, sigma=0.5)
    assert per_sigma.values.tolist()[0] == ["cifar10", "RS (Cohen et al.)", 0.25, "55.0",
                                            "not run", "RS (Cohen et al.)"]
    assert per_sigma.values.tolist()[1] == ["cifar10", "DMAE ViT-B", 0.25, "—", "40.0",
                                            "DMAE ViT-B"]
    with pytest.raises(ValueError, match="svhn"):
        paper_comparison_table(runs, "svhn", reference)
    # no paper number bolded: the table has no accuracy column to compare
    assert "**" not in to_markdown(table)


def test_paper_comparison_every_dataset(tmp_path, runs):
    """Every dataset and published method of the reference, "not run" where nothing maps."""
    reference = tmp_path / "reference.csv"
    reference.write_text(REFERENCE)
    table = paper_comparison_table(runs, None, reference, radii=[0.0, 1.0])
    rows = table.values.tolist()
    assert [r[:2] for r in rows[:6:2]] == [["cifar10", "RS (Cohen et al.)"],
                                           ["cifar10", "DMAE ViT-B"],
                                           ["imagenet", "DMAE ViT-B"]]
    # the cifar10 runs do not stand in for the imagenet numbers of the same method
    assert rows[4:6] == [["imagenet", "DMAE ViT-B", 0.5, "69.6", "not run", "—"],
                         ["imagenet", "DMAE ViT-B", 1.0, "57.9", "not run", "—"]]
    # runs without a counterpart at the given radii
    assert rows[6:] == [["cifar10", "MAE ViT-B", 0.0, "—", "not run", "MAE ViT-B"],
                        ["cifar10", "MAE ViT-B", 1.0, "—", "not run", "MAE ViT-B"]]
    # compared as another dataset: the DMAE runs now fill the imagenet row
    as_imagenet = paper_comparison_table(runs, None, reference, reference_dataset="imagenet",
                                         radii=[0.0])
    rows = as_imagenet.values.tolist()
    assert ["imagenet", "DMAE ViT-B", 1.0, "57.9", "20.0", "DMAE ViT-B"] in rows
    assert ["cifar10", "DMAE ViT-B", 0.25, "79.2", "not run", "—"] in rows


def test_figures_skip_missing_runs_and_say_when_none(tmp_path, runs):
    missing = [Run("cifar10", "rs", 0.5, tmp_path / "absent.tsv")]
    plot_certified_accuracy(missing, "cifar10", [tmp_path / "none.png", tmp_path / "none.pdf"])
    plot_best_over_sigma(missing, "cifar10", tmp_path / "none_best.png")
    plot_best_over_sigma(runs, "imagenet", tmp_path / "other_dataset.png")
    for name in ("none.png", "none_best.png", "other_dataset.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "none.pdf").read_bytes()[:5] == b"%PDF-"
    # a mix of finished and missing runs plots the finished ones
    plot_certified_accuracy(runs[:2], "cifar10", tmp_path / "one.png")
    assert (tmp_path / "one.png").stat().st_size > 1000


def test_write_table_formats(tmp_path, runs):
    table = best_sigma_table(runs, "cifar10", RADII)
    paths = [tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex"]
    write_table(table, paths)
    assert pd.read_csv(paths[0])["r=1"].tolist()[:2] == [0.0, 20.0]
    assert "**" in paths[1].read_text() and "**" not in paths[0].read_text()
    assert r"\textbf{" in paths[2].read_text()
    with pytest.raises(ValueError, match="unknown table format"):
        write_table(table, tmp_path / "t.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_figures_are_written(tmp_path, runs):
    outputs = [tmp_path / "acc.png", tmp_path / "acc.pdf"]
    plot_certified_accuracy(runs, "cifar10", outputs)
    plot_best_over_sigma(runs, "cifar10", [tmp_path / "best.png", tmp_path / "best.pdf"],
                         max_radius=1.5)
    rng = np.random.default_rng(0)
    clean = rng.random((4, 3, 16, 16), dtype=np.float32)
    noisy = clean + 0.25 * rng.standard_normal(clean.shape, dtype=np.float32)
    reconstruction_grid(clean, noisy, clean * 0.9, [tmp_path / "rec.png", tmp_path / "rec.pdf"])
    reconstruction_grid(clean[:, :1], noisy[:, :1], clean[:, :1], tmp_path / "gray.png")
    for name in ("acc", "best", "rec"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "gray.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="shapes differ"):
        reconstruction_grid(clean, noisy[:2], clean, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_run_records_accept_tuples_and_dicts(tmp_path):
    from dmae.report.analysis import as_runs
    a = as_runs([("imagenet", "dmae", 0.5, "x.tsv"),
                 {"dataset": "imagenet", "method": "dmae", "sigma": "0.5", "tsv_path": "x.tsv"}])
    assert a[0] == a[1] == Run("imagenet", "dmae", 0.5, Path("x.tsv"))
    # str paths and sigmas are normalized; an empty label or paper means none
    b = Run("imagenet", "dmae", "0.5", "x.tsv", label="", paper=" ", checkpoint="c.json")
    assert (b.sigma, b.tsv, b.display, b.paper, b.checkpoint) == (0.5, Path("x.tsv"), "dmae",
                                                                  None, Path("c.json"))
    assert not b.done


# ------------------------------------------------------------------- interval coverage

DRAWS = 4000
# Coverage estimated from DRAWS binomial samples: allow three Monte-Carlo standard errors.
COVERAGE_FLOOR = 0.95 - 3 * (0.05 * 0.95 / DRAWS) ** 0.5


def coverage(interval, n: int, p: float) -> float:
    ks = np.random.default_rng(0).binomial(n, p, size=DRAWS)
    bounds = {k: interval(k, n) for k in np.unique(ks)}
    return float(np.mean([bounds[k][0] <= p <= bounds[k][1] for k in ks]))


@pytest.mark.parametrize("n, p", [(20, 0.05), (20, 0.5), (500, 0.02), (500, 0.3), (500, 0.97)])
def test_accuracy_interval_covers_the_true_accuracy(n, p):
    from dmae.report.analysis import proportion_interval

    assert coverage(proportion_interval, n, p) >= COVERAGE_FLOOR


def test_a_normal_approximation_fails_the_same_check():
    """The variant that must fail: a Wald interval undercovers near 0 with few images."""

    def wald(k, n):
        p = k / n
        half = 1.96 * (p * (1 - p) / n) ** 0.5
        return p - half, p + half

    assert coverage(wald, 20, 0.05) < COVERAGE_FLOOR
