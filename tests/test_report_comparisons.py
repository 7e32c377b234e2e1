"""The report's comparisons: the pretraining ablation (DMAE against MAE, the downstream
recipe alike, as the paper compares them) and the paper's tables in their own layout."""

from __future__ import annotations

import copy

import pytest
from conftest import REPO
from test_report_build import write_tsv

from dmae import config as cfglib
from dmae import layout
from dmae.report import registry
from dmae.report.ablation import ablation_table, pretraining_pairs
from dmae.report.runs import report_runs


def load(name: str) -> dict:
    return cfglib.load(REPO / "config" / f"{name}.yaml")


def test_pairs_differ_in_the_pretraining_alone():
    imagenet = [(p.downstream, p.noisy, p.clean) for p in pretraining_pairs(load("imagenet"))]
    assert imagenet == [("fine-tuning + CR", "dmae", "mae"),
                        ("linear probe", "dmae_linprobe", "mae_linprobe")]
    assert [(p.noisy, p.clean) for p in pretraining_pairs(load("default"))] == [("dmae", "mae")]
    assert pretraining_pairs(load("cifar10")) == []  # no MAE pretraining there
    cfg = load("default")
    cfg["methods"]["mae"]["consistency"] = False  # now another downstream recipe
    assert pretraining_pairs(cfg) == []
    assert "pretraining_ablation" not in registry.table_names(load("cifar10"))
    assert "pretraining_ablation" in registry.table_names(load("imagenet"))


def test_the_table_puts_each_dmae_row_above_its_mae_row(tmp_path):
    cfg = copy.deepcopy(load("imagenet"))
    cfg["paths"]["results"] = str(tmp_path)
    # DMAE certifies more images at every sigma: 3 of 4 against 1 of 4
    for model, method, sigma in layout.runs(cfg):
        good = 3 if method.startswith("dmae") else 1
        write_tsv(layout.certify_tsv(cfg, model, method, sigma),
                  [(k, k if k < good else -1, 0.6 if k < good else 0.0, int(k < good))
                   for k in range(4)])
    table = ablation_table(cfg, report_runs(cfg), [0.0, 0.5])
    assert list(table.columns[:3]) == ["downstream", "method", "sigma"]
    expected = [(downstream, f"{label} (vit_b)", sigma)
                for downstream, labels in (("fine-tuning + CR", ("DMAE", "MAE")),
                                           ("linear probe", ("DMAE (linear probe)",
                                                             "MAE (linear probe)")))
                for sigma in (0.25, 0.5, 1.0) for label in labels]
    assert list(zip(table["downstream"], table["method"], table["sigma"], strict=True)) == expected
    assert table["r=0"].tolist() == [75.0, 25.0] * 6
    assert table["r=0.5"].tolist() == pytest.approx([75.0, 25.0] * 6)


def test_the_paper_tables_show_each_method_with_its_size_and_data(tmp_path):
    """Table 1 in the paper's layout: every published method with its #params and extra
    data, then this run's, whose size is that of the published model it reproduces; the
    per-sigma table puts Cohen et al.'s numbers at each sigma above this run's."""
    from dmae.report.paper_tables import paper_table, per_sigma_paper_table
    from dmae.report.reference import read_reference

    cfg = copy.deepcopy(load("imagenet"))
    cfg["paths"]["results"] = str(tmp_path)
    for sigma, certified in (("0.25", 1), ("0.5", 2), ("1.0", 3)):  # of 4, radius 1.2
        write_tsv(layout.certify_tsv(cfg, "vit_b", "dmae", sigma),
                  [(k, k, 1.2 if k < certified else 0.0, 1) for k in range(4)])
    reference = read_reference()
    table = paper_table(cfg, report_runs(cfg), reference)
    published = reference[(reference["dataset"] == "imagenet") & (reference["sigma"] == "best")]
    paper = table[table["source"] == "paper"]
    assert list(paper["method"]) == list(dict.fromkeys(published["method"]))
    for _, row in published.iterrows():
        ours = paper[paper["method"] == row["method"]].iloc[0]
        assert (ours["#params"], ours["extra data"]) == (row["params"], row["extra_data"])
        assert float(ours[f"r={row['radius']:g}"]) == row["certified_accuracy_pct"]
    run = table[(table["source"] == "this run") & (table["method"] == "DMAE (vit_b)")].iloc[0]
    assert (run["#params"], run["extra data"]) == ("87M", "no")
    assert (run["r=0.5"], run["r=1"], run["r=1.5"]) == ("75.0", "75.0", "0.0")  # best: 3 of 4
    assert table.loc[table["method"] == "DMAE (vit_l)", "r=0.5"].tolist() == ["not run"]

    per_sigma = per_sigma_paper_table(cfg, report_runs(cfg), reference)
    at = per_sigma[(per_sigma["sigma"] == 0.5)]
    assert at["source"].tolist()[0] == "paper" and at["method"].tolist()[0] == "RS (Cohen et al.)"
    cohen = reference[(reference["table"] == "cohen_table2") & (reference["sigma"] == "0.5")]
    assert [float(at.iloc[0][f"r={r:g}"]) for r in cohen["radius"]] == list(
        cohen["certified_accuracy_pct"])
    ours = at[at["method"] == "DMAE (vit_b)"].iloc[0]
    assert (ours["r=0"], ours["r=1"], ours["r=1.5"]) == ("100.0", "50.0", "0.0")
    assert "paper_table" not in registry.table_names(load("default"))  # no paper dataset
