"""The report stage (``write_report``) on a hand-written results tree laid out by dmae.layout."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from dmae import config as cfglib
from dmae import layout
from dmae.certify import SequentialPlan, certify_from_counts, meta_path
from dmae.io import write_json
from dmae.report import registry
from dmae.report.analysis import radius_ceiling
from dmae.report.build import write_report
from dmae.report.reference import read_reference
from dmae.report.runs import checkpoint_json, report_runs
from dmae.report.summary import summary_markdown

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\tn0\tn\tnA\tpA_lower\tn_used\n"

# Five images each: (label, predict, radius, correct)
TSVS = {
    ("rs", 0.25): [(1, 1, 0.2, 1), (2, 2, 0.1, 1), (0, -1, 0.0, 0), (4, 3, 0.3, 0),
                   (5, 5, 0.05, 1)],
    ("dmae", 0.25): [(1, 1, 0.28, 1), (2, 2, 0.26, 1), (0, 0, 0.1, 1), (4, 4, 0.0, 0),
                     (5, -1, 0.0, 0)],
    ("dmae", 0.5): [(1, 1, 0.55, 1), (2, 2, 0.3, 1), (0, -1, 0.0, 0), (4, 1, 0.4, 0),
                    (5, -1, 0.0, 0)],
}
# Checkpoint metadata as the training engine writes it (the keys the report reads, and more)
CHECKPOINTS = {
    ("rs", 0.25): {"epoch": 1, "metrics": {"val_acc": 0.14, "val_smoothed_acc": 0.125}},
    ("dmae", 0.25): {"epoch": 3, "metrics": {"val_acc": 0.175, "val_smoothed_acc": 0.185}},
    ("dmae", 0.5): {"epoch": 2, "metrics": {"val_acc": 0.205, "val_loss": 2.3}},  # no smoothed
}


@pytest.fixture
def cfg(tmp_path) -> dict:
    cfg = cfglib.load(REPO / "config" / "smoke.yaml")
    cfg["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    return cfg


def write_tsv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{i}\t{lab}\t{pred}\t{rad!r}\t{cor}\t10\t50\t40\t0.6\t50\n"
             for i, (lab, pred, rad, cor) in enumerate(rows)]
    path.write_text(HEADER + "".join(lines))


def write_checkpoint(path: Path, model: str, method: str, sigma: float, values: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"kind": path.stem, "task": "finetune", "model": model, "method": method,
            "sigma": sigma, "step": 5, "metrics_epoch": values["epoch"],
            "selection": {"metric": "val_smoothed_acc", "mode": "max"}, **values}
    path.write_text(json.dumps(meta, indent=2))


def populate(cfg: dict, model: str = "micro") -> None:
    """rs at 0.25 and dmae at both sigmas are done; rs at 0.5 has neither TSV nor checkpoint."""
    for (method, sigma), rows in TSVS.items():
        write_tsv(layout.certify_tsv(cfg, model, method, sigma), rows)
        write_checkpoint(checkpoint_json(cfg, model, method, sigma), model, method, sigma,
                         CHECKPOINTS[(method, sigma)])


def tables_dir(cfg: dict) -> Path:
    return layout.results_dir(cfg) / "tables"


def read_table(cfg: dict, name: str) -> pd.DataFrame:
    return pd.read_csv(tables_dir(cfg) / f"{name}.csv", dtype=str, keep_default_na=False)


def published_methods(dataset: str) -> list[str]:
    reference = read_reference(REPO / "src" / "dmae" / "reference_results.csv")
    best = reference[(reference["dataset"] == dataset) & (reference["sigma"] == "best")]
    return list(dict.fromkeys(best["method"]))


def test_write_report_writes_every_declared_output(cfg):
    populate(cfg)
    written = write_report(cfg)
    declared = registry.table_paths(cfg) + registry.figure_paths(cfg)
    assert written == declared
    assert {p.name for p in declared} >= {"base_classifiers.md", "summary.md",
                                          "paper_comparison.tex", "best_over_sigma.pdf"}
    for path in declared:
        assert path.is_file() and path.stat().st_size > 0, path
    for path in registry.figure_paths(cfg):
        magic = b"\x89PNG" if path.suffix == ".png" else b"%PDF"
        assert path.read_bytes()[:4] == magic
    # nothing else (no leftover temporary files) in the output folders
    for folder in {p.parent for p in declared}:
        assert sorted(folder.iterdir()) == sorted(p for p in declared if p.parent == folder)

    # the per-sigma table keeps the missing run, with "not run"
    md = (tables_dir(cfg) / "certified_accuracy.md").read_text()
    assert "| rs | 0.5 | not run |" in md
    # bold-best marking in Markdown and LaTeX, none in the CSV
    assert "**" in (tables_dir(cfg) / "best_over_sigma.md").read_text()
    assert r"\textbf{" in (tables_dir(cfg) / "best_over_sigma.tex").read_text()
    assert "**" not in (tables_dir(cfg) / "best_over_sigma.csv").read_text()


def test_metrics_json_holds_the_numbers_for_dvc(cfg):
    populate(cfg)
    write_report(cfg)
    metrics = json.loads((tables_dir(cfg) / "metrics.json").read_text())
    assert metrics["dmae"]["sigma_0.5"]["r=0.5"] == 20.0  # one of five images
    assert metrics["dmae"]["best_over_sigma"]["r=0.25"] == 40.0
    assert metrics["dmae"]["best_over_sigma"]["r=0.5"] == 20.0
    assert "sigma_0.5" not in metrics["rs"]  # not run: left out, JSON has no NaN


def test_write_report_without_any_finished_run(cfg):
    written = write_report(cfg)  # a fresh results tree: nothing fine-tuned or certified
    assert written == registry.table_paths(cfg) + registry.figure_paths(cfg)
    assert all(p.is_file() for p in written)
    best = read_table(cfg, "best_over_sigma")
    assert list(best["method"]) == ["rs", "dmae"] and set(best["r=0"]) == {""}
    assert "| rs |  | not run | not run |" in (tables_dir(cfg) / "best_over_sigma.md").read_text()
    base = (tables_dir(cfg) / "base_classifiers.md").read_text().splitlines()
    assert base[2] == "| rs | 0.25 | not run | not run | not run | not run | not run | not run |"
    paper = read_table(cfg, "paper_comparison")
    assert set(paper["this run %"]) == {"not run"}
    summary = (tables_dir(cfg) / "summary.md").read_text()
    assert summary.count("no certification") == 4


def test_paper_table_lists_every_published_method(cfg):
    populate(cfg)
    write_report(cfg)
    table = read_table(cfg, "paper_comparison")
    assert list(table.columns) == ["dataset", "method", "radius", "paper %", "this run %", "run"]
    assert list(dict.fromkeys(table["dataset"])) == ["imagenet", "cifar10", "fashion-mnist"]
    for dataset in ("imagenet", "cifar10"):
        rows = table[table["dataset"] == dataset]
        assert list(dict.fromkeys(rows["method"])) == published_methods(dataset)
        assert set(rows["this run %"]) == {"not run"} and set(rows["run"]) == {"—"}
        assert "—" not in set(rows["paper %"])
    imagenet_dmae = table[(table["dataset"] == "imagenet") & (table["method"] == "DMAE ViT-L")]
    assert list(imagenet_dmae["paper %"]) == ["73.6", "64.6", "53.7", "41.5", "27.5"]
    # this config's runs (Fashion-MNIST, no paper counterpart), at the config's radii
    ours = table[table["dataset"] == "fashion-mnist"]
    assert ours[["method", "radius", "paper %", "this run %"]].values.tolist() == [
        ["rs", "0.0", "—", "60.0"], ["rs", "0.25", "—", "0.0"],
        ["rs", "0.5", "—", "0.0"], ["rs", "1.0", "—", "0.0"],
        # best over sigma 0.25 and 0.5: r=0 -> 60, r=0.25 -> 40 (0.25), r=0.5 -> 20 (0.5)
        ["dmae", "0.0", "—", "60.0"], ["dmae", "0.25", "—", "40.0"],
        ["dmae", "0.5", "—", "20.0"], ["dmae", "1.0", "—", "0.0"],
    ]
    md = (tables_dir(cfg) / "paper_comparison.md").read_text()
    assert "| cifar10 | SmoothMix | 0.25 | 67.9 | not run | — |" in md
    assert "**" not in md


def test_paper_names_put_a_run_on_its_published_row(cfg, caplog):
    cfg["methods"]["dmae"]["label"] = "DMAE + CR"
    cfg["report"].update(reference_dataset="cifar10",
                         paper_names={"micro/dmae": "DMAE ViT-B", "micro/mae": "MAE"})
    cfglib.validate(cfg)
    populate(cfg)
    with caplog.at_level(logging.WARNING, logger="dmae.report.build"):
        write_report(cfg)
    assert "report.paper_names.micro/mae: no such model/method" in caplog.text
    table = read_table(cfg, "paper_comparison")
    dmae = table[(table["dataset"] == "cifar10") & (table["method"] == "DMAE ViT-B")]
    # published radii 0.25, 0.5, 0.75, 1.0; ours: best over sigma 0.25 and 0.5
    assert dmae[["radius", "paper %", "this run %", "run"]].values.tolist() == [
        ["0.25", "79.2", "40.0", "DMAE + CR"], ["0.5", "64.6", "20.0", "DMAE + CR"],
        ["0.75", "47.3", "0.0", "DMAE + CR"], ["1.0", "36.1", "0.0", "DMAE + CR"],
    ]
    # the same method on ImageNet and the other CIFAR-10 methods are not run
    others = table[(table["dataset"] != "fashion-mnist")
                   & ~((table["dataset"] == "cifar10") & (table["method"] == "DMAE ViT-B"))]
    assert set(others["this run %"]) == {"not run"}
    # rs has no paper name: listed once, as its own row, with "—" as the paper's number
    assert sorted(set(table.loc[table["paper %"] == "—", "method"])) == ["rs"]
    assert "DMAE + CR" not in set(table.loc[table["dataset"] == "fashion-mnist", "method"])
    summary = (tables_dir(cfg) / "summary.md").read_text()
    assert "DMAE + CR → DMAE ViT-B" in summary


def test_several_models_label_runs_by_model(cfg):
    cfg["models"]["tiny"] = dict(cfg["models"]["micro"])
    cfg["report"]["paper_names"] = {"tiny/dmae": "DMAE ViT-B"}
    runs = report_runs(cfg)
    assert len(runs) == 2 * 2 * 2
    tiny = [r for r in runs if r.method == "tiny/dmae"]
    assert [(r.sigma, r.display, r.paper) for r in tiny] == [(0.25, "dmae (tiny)", "DMAE ViT-B"),
                                                             (0.5, "dmae (tiny)", "DMAE ViT-B")]
    assert tiny[0].tsv == layout.certify_tsv(cfg, "tiny", "dmae", 0.25)
    assert tiny[0].checkpoint == layout.finetune_dir(cfg, "tiny", "dmae", 0.25) / "best.json"
    assert {r.paper for r in runs if r.method != "tiny/dmae"} == {None}
    cfg["certify"]["checkpoint"] = "last"
    assert report_runs(cfg)[0].checkpoint.name == "last.json"
    populate(cfg, model="tiny")
    write_report(cfg)
    best = read_table(cfg, "best_over_sigma")
    assert list(best["method"]) == ["rs (micro)", "dmae (micro)", "rs (tiny)", "dmae (tiny)"]
    assert list(best["r=0"][:2]) == ["", ""] and list(best["r=0"][2:]) == ["60.0", "60.0"]


def test_base_classifier_table_values(cfg):
    populate(cfg)
    write_report(cfg)
    table = read_table(cfg, "base_classifiers")
    assert list(table.columns) == ["method", "sigma", "epoch", "val acc %",
                                   "val smoothed acc %", "images", "smoothed test acc %",
                                   "smoothed test acc % lo", "smoothed test acc % hi", "ACR",
                                   "ACR lo", "ACR hi"]
    rows = {(r["method"], r["sigma"]): r for r in table.to_dict("records")}
    rs = rows[("rs", "0.25")]
    assert rs["epoch"] == "1"
    assert float(rs["val acc %"]) == pytest.approx(14.0)
    assert float(rs["val smoothed acc %"]) == pytest.approx(12.5)
    assert rs["images"] == "5" and float(rs["smoothed test acc %"]) == pytest.approx(60.0)
    assert float(rs["ACR"]) == pytest.approx((0.2 + 0.1 + 0.05) / 5)
    # 3 of 5: R's binom.test(3, 5)$conf.int
    assert float(rs["smoothed test acc % lo"]) == pytest.approx(14.66328, abs=1e-4)
    assert float(rs["smoothed test acc % hi"]) == pytest.approx(94.72550, abs=1e-4)
    dmae = rows[("dmae", "0.5")]
    assert dmae["epoch"] == "2" and float(dmae["val acc %"]) == pytest.approx(20.5)
    assert dmae["val smoothed acc %"] == "—"  # the checkpoint did not record it
    assert float(dmae["smoothed test acc %"]) == pytest.approx(40.0)
    assert rows[("rs", "0.5")]["epoch"] == "" and rows[("rs", "0.5")]["ACR"] == ""

    md = re.sub(r" ±[0-9.]+", "", (tables_dir(cfg) / "base_classifiers.md").read_text())
    md = md.splitlines()
    assert md[0] == ("| method | sigma | epoch | val acc % | val smoothed acc % | images "
                     "| smoothed test acc % | ACR |")
    assert md[2] == "| rs | 0.25 | 1 | 14.0 | 12.5 | 5 | **60.0** | 0.070 |"
    assert md[3] == "| rs | 0.5 | not run | not run | not run | not run | not run | not run |"
    assert md[4] == "| dmae | 0.25 | 3 | 17.5 | **18.5** | 5 | **60.0** | 0.128 |"
    assert md[5] == "| dmae | 0.5 | 2 | **20.5** | — | 5 | 40.0 | **0.170** |"
    tex = re.sub(r" ±[0-9.]+", "", (tables_dir(cfg) / "base_classifiers.tex").read_text())
    assert r"dmae & 0.5 & 2 & \textbf{20.5} & — & 5 & 40.0 & \textbf{0.170} \\" in tex


def test_radius_ceiling():
    assert radius_ceiling(10_000, 0.001, 1.0) == pytest.approx(3.1986, abs=1e-4)
    assert radius_ceiling(100_000, 0.001, 1.0) == pytest.approx(3.8115, abs=1e-4)
    assert radius_ceiling(100_000, 0.001, 0.5) == pytest.approx(0.5 * 3.8115, abs=1e-4)
    # what CERTIFY returns when every one of the n samples votes for the top class
    for n, alpha, sigma in ((50, 0.001, 0.5), (1000, 0.001, 0.25), (100_000, 0.01, 1.0)):
        _, _, radius = certify_from_counts(n, n, alpha, sigma)
        assert radius_ceiling(n, alpha, sigma) == pytest.approx(radius, rel=1e-9)
    assert radius_ceiling(1, 0.001, 1.0) == 0.0  # one sample can never certify
    for bad in ((0, 0.001), (10.5, 0.001), (10, 0.0), (10, 1.0)):
        with pytest.raises(ValueError):
            radius_ceiling(*bad)


def test_summary(cfg):
    populate(cfg)
    text = summary_markdown(cfg)
    assert text.startswith("# Report summary: smoke\n")
    assert "- dataset: fashion-mnist" in text
    assert "n0 = 10, n = 50, alpha = 0.001" in text
    ceiling = radius_ceiling(50, 0.001, 1.0)
    assert f"= {ceiling:.4f} sigma" in text
    assert f"| 0.25 | {0.25 * ceiling:.4f} | 0.5, 1 |" in text
    assert f"| 0.5 | {0.5 * ceiling:.4f} | 1 |" in text
    assert "| dmae | 0.5 | 5 | 2 | 2 | 60 | done |" in text  # 10 + 50 forward passes
    assert "| rs | 0.5 | — | — | — | — | not run |" in text
    assert "cohen (Cohen et al.'s CERTIFY" in text and "not comparable" not in text
    missing = [line for line in text.splitlines() if "no certification" in line]
    assert len(missing) == 1 and missing[0].startswith("- rs, sigma 0.5:")
    assert str(layout.certify_tsv(cfg, "micro", "rs", 0.5)) in missing[0]
    assert "the paper reports no fashion-mnist results" in text
    assert not math.isnan(ceiling)


def test_an_adaptive_certification_is_named_with_its_cost_and_ceiling(cfg):
    cfg["certify"]["method"] = "adaptive"
    cfg = cfglib.validate(cfg)  # the grid: report.radii
    populate(cfg)
    tsv = layout.certify_tsv(cfg, "micro", "dmae", 0.5)
    write_json(meta_path(tsv), {"settings": {"method": {"name": "adaptive"}}})
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    rows[1][-1] = "0"  # stopped on selection: 10 forward passes for this image
    tsv.write_text("\n".join("\t".join(r) for r in rows) + "\n")

    text = summary_markdown(cfg)
    grid = ", ".join(f"{r:g}" for r in cfg["report"]["radii"])
    assert f"- certification: adaptive (estimation samples in rounds, each image stopped once " \
           f"its answer at radii {grid} is settled; at most n_max = 50), n0 = 10, " in text
    assert "ACR is not comparable between certification methods" in text
    plan = SequentialPlan(sigma=0.5, alpha=0.001, n_max=50, radii=cfg["report"]["radii"],
                          first_look=10, growth=1.2)  # the schema's defaults
    ceiling = radius_ceiling(50, 0.001, 0.5)
    top = f"{plan.grid_radii[-1]:g}"
    assert f"| 0.5 (K = {len(plan.looks)} looks; grid radii up to {top}) | {ceiling:.4f} |" \
        in text
    assert "| dmae | 0.5 | 5 | 2 | 2 | 50 | done |" in text  # (10 + 0 + 4 x (10 + 50)) / 5

    write_report(cfg)
    table = read_table(cfg, "certified_accuracy").set_index(["method", "sigma"])
    assert table.loc[("dmae", "0.5"), "certification"] == "adaptive"
    assert table.loc[("dmae", "0.5"), "passes/image"] == "50"
    assert table.loc[("dmae", "0.25"), "certification"] == "cohen"  # no sidecar: made before


def test_a_validation_study_labels_its_certified_split(cfg):
    """A config that certifies validation images (certify.split: val) says so in its tables and
    summary; nothing in them calls those numbers test accuracy."""
    cfg["certify"]["split"] = "val"
    populate(cfg)
    write_report(cfg)
    assert "smoothed val acc %" in read_table(cfg, "base_classifiers").columns
    summary = (tables_dir(cfg) / "summary.md").read_text()
    assert "validation image" in summary and "test image" not in summary


# ------------------------------------------------------------------------ run comparison


def compare(a: dict, b: dict):
    from dmae.report.compare import compare_runs

    return compare_runs(layout.results_dir(a), layout.results_dir(b))


def test_compare_tells_identical_within_and_beyond(cfg, tmp_path):
    populate(cfg)
    write_report(cfg)
    other = {**cfg, "paths": {**cfg["paths"], "results": str(tmp_path / "other")}}
    populate(other)
    write_report(other)
    same = compare(cfg, other)
    assert same.cells and not same.beyond_uncertainty
    assert all(c.verdict == "identical" for c in same.cells)

    # one image of five flips: far inside 5-image intervals
    rows = [list(r) for r in TSVS[("dmae", 0.5)]]
    rows[0] = [1, 2, 0.0, 0]
    write_tsv(layout.certify_tsv(other, "micro", "dmae", 0.5), rows)
    write_report(other)
    small = compare(cfg, other)
    changed = {(c.table, c.row, c.column): c for c in small.cells if c.verdict != "identical"}
    assert changed[("certified_accuracy", "dmae 0.5", "r=0")].verdict == "within"
    assert changed[("certified_accuracy", "dmae 0.5", "correct")].verdict == "different"
    assert not small.beyond_uncertainty

    # every image of dmae at 0.25 wrong: 0 of 5 lies outside 3 of 5's interval [14.7, 94.7]
    write_tsv(layout.certify_tsv(other, "micro", "dmae", 0.25),
              [(lab, -1, 0.0, 0) for lab, *_ in TSVS[("dmae", 0.25)]])
    write_report(other)
    large = compare(cfg, other)
    beyond = {(c.table, c.row, c.column) for c in large.beyond_uncertainty}
    assert ("certified_accuracy", "dmae 0.25", "r=0") in beyond

    # a run whose table lacks a row: missing, beyond the uncertainty
    table = tables_dir(other) / "certified_accuracy.csv"
    table.write_text("".join(table.read_text().splitlines(keepends=True)[:-1]))
    assert any(c.verdict == "missing" for c in compare(cfg, other).beyond_uncertainty)


def test_compare_names_a_folder_without_tables(tmp_path):
    from dmae.report.compare import compare_runs

    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match="no tables to compare"):
        compare_runs(tmp_path / "a", tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no such results folder"):
        compare_runs(tmp_path / "missing", tmp_path / "a")


# ------------------------------------------------------------------------ seed spread


def test_seed_spread_over_replicates(cfg):
    cfg["methods"] = {
        "rs_s0": {"pretraining": None, "consistency": False, "label": "RS", "recipe": "rs"},
        "rs_s1": {"pretraining": None, "consistency": False, "label": "RS", "recipe": "rs",
                  "finetune": {"seed": 1}},
    }
    cfg["sigmas"] = [0.25, 0.5]
    seed0 = {0.25: [(1, 1, 0.3, 1), (2, 2, 0.1, 1), (0, 0, 0.2, 1), (4, 3, 0.0, 0)],  # 75 %
             0.5: [(1, 1, 0.6, 1), (2, -1, 0.0, 0), (0, 0, 0.3, 1), (4, 3, 0.0, 0)]}  # 50 %
    seed1 = {0.25: [(1, 1, 0.3, 1), (2, 0, 0.1, 0), (0, -1, 0.0, 0), (4, 3, 0.0, 0)],  # 25 %
             0.5: [(1, 1, 0.9, 1), (2, 2, 0.7, 1), (0, 0, 0.8, 1), (4, 4, 0.6, 1)]}  # 100 %
    for method, tsvs in (("rs_s0", seed0), ("rs_s1", seed1)):
        for sigma, rows in tsvs.items():
            write_tsv(layout.certify_tsv(cfg, "micro", method, sigma), rows)
    assert layout.has_replicates(cfg)
    write_report(cfg)  # also checks it wrote exactly the declared tables, seed_spread included
    table = read_table(cfg, "seed_spread")
    rows = {r["sigma"]: r for r in table.to_dict("records")}
    assert set(table["method"]) == {"RS"} and list(table["sigma"]) == ["0.25", "0.5", "best"]
    r0 = rows["0.25"]
    assert r0["seeds"] == "2" and float(r0["r=0 mean"]) == pytest.approx(50.0)
    assert (float(r0["r=0 min"]), float(r0["r=0 max"])) == (25.0, 75.0)
    assert float(r0["r=0 sd"]) == pytest.approx(35.35534, abs=1e-4)
    # best over sigma per seed first: seed 0 75 % (0.25), seed 1 100 % (0.5)
    assert float(rows["best"]["r=0 mean"]) == pytest.approx(87.5)
    md = (tables_dir(cfg) / "seed_spread.md").read_text()
    assert "| RS | 0.25 | 2 | 50.0 (25.0–75.0) |" in md
    # the per-sigma table tells the replicates apart
    per_sigma = read_table(cfg, "certified_accuracy")
    assert set(per_sigma["method"]) == {"RS (rs_s0)", "RS (rs_s1)"}


def test_compare_with_a_run_that_states_no_intervals(cfg, tmp_path):
    """Tables from before the intervals: the other run's interval judges the cell."""
    populate(cfg)
    write_report(cfg)
    old = {**cfg, "paths": {**cfg["paths"], "results": str(tmp_path / "old")}}
    populate(old)
    rows = [list(r) for r in TSVS[("dmae", 0.5)]]
    rows[0] = [1, 2, 0.0, 0]  # one image of five flips
    write_tsv(layout.certify_tsv(old, "micro", "dmae", 0.5), rows)
    write_report(old)
    table = pd.read_csv(tables_dir(old) / "certified_accuracy.csv")
    table[[c for c in table.columns if not c.endswith((" lo", " hi"))]].to_csv(
        tables_dir(old) / "certified_accuracy.csv", index=False)
    cells = {(c.table, c.row, c.column): c for c in compare(old, cfg).cells}
    assert cells[("certified_accuracy", "dmae 0.5", "r=0")].verdict == "within"


def test_compare_with_a_run_from_before_a_column_was_added(cfg, tmp_path):
    """A descriptive column the older tables lack is reported and decides nothing; a
    measurement (a radius's certified accuracy) one run lacks is missing."""
    populate(cfg)
    write_report(cfg)
    old = {**cfg, "paths": {**cfg["paths"], "results": str(tmp_path / "old")}}
    populate(old)
    write_report(old)
    path = tables_dir(old) / "certified_accuracy.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)  # every cell as written
    table.drop(columns=["certification", "passes/image"]).to_csv(path, index=False)
    comparison = compare(old, cfg)
    cells = {(c.table, c.row, c.column): c for c in comparison.cells}
    added = cells[("certified_accuracy", "dmae 0.5", "passes/image")]
    assert (added.verdict, added.note) == ("different", "a column one run lacks")
    assert not comparison.beyond_uncertainty

    table.drop(columns=["r=0", "r=0 lo", "r=0 hi"]).to_csv(path, index=False)
    beyond = {(c.table, c.row, c.column) for c in compare(old, cfg).beyond_uncertainty}
    assert ("certified_accuracy", "dmae 0.5", "r=0") in beyond
