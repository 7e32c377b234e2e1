"""The README's Results section is generated from the committed result files."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from conftest import BIN, REPO
from workflow_runs import smoke_cfg, write_config

from dmae import config as cfglib
from dmae import reproducibility
from dmae.io import sha256_file
from dmae.report.readme import END, check_readme, start_marker, update_readme
from dmae.report.run_info import run_info

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_committed_readme_matches_the_committed_results():
    proc = subprocess.run([str(BIN / "dmae"), "readme-results", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = (REPO / "README.md").read_text()
    for config, view in (("config/default.yaml", "full"),
                         ("config/fashion-mnist-sigma1-study.yaml", "table")):
        assert start_marker(config, view) in text  # the README's results are all generated


def test_run_info_reads_wall_time_and_memory_from_benchmarks(tmp_path):
    cfg = cfglib.load(REPO / "config" / "smoke.yaml")
    cfg["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    bench = tmp_path / "results" / "smoke" / "benchmarks"
    (bench / "finetune").mkdir(parents=True)
    # prepare ran alone, a and b side by side; the run was stopped for an hour and resumed
    # for c: 60 + 600 + 120 s of work, however the jobs overlapped or paused
    jobs = [(bench / "prepare.tsv", 60.0, 900.0, 1_000_060),  # 1,000,000-1,000,060 s
            (bench / "finetune" / "a.tsv", 600.0, 1500.0, 1_000_660),  # 1,000,060-1,000,660
            (bench / "finetune" / "b.tsv", 300.0, 1200.0, 1_000_460),  # 1,000,160-1,000,460
            (bench / "finetune" / "c.tsv", 120.0, 800.0, 1_004_380)]  # 1,004,260-1,004,380
    for path, seconds, rss, end in jobs:
        path.write_text(HEADER + f"{seconds}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t0\n")
        os.utime(path, (end, end))
    info = run_info(cfg, REPO)
    assert info["wall_time_min"] == pytest.approx((60 + 600 + 120) / 60, abs=0.05)
    assert info["peak_job_rss_mib"] == 1500 and info["jobs"] == 4
    assert f"CPU ({reproducibility.machine_isa()})" in info["machine"]
    vendor = next(line.split(":")[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("vendor_id"))
    assert info["cpu_vendor"] == {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}[vendor]
    assert info["cpu_isa"] == "avx2" and info["versions"]["torch"] == metadata.version("torch")
    assert info["lock_sha256"] == sha256_file(REPO / "requirements.lock")


def _study(tmp_path: Path) -> str:
    """A config (smoke's methods rs, dmae and sigmas 0.25, 0.5) whose committed tables list
    its runs in another order than the config's; returns its path relative to tmp_path."""
    cfg = smoke_cfg()
    cfg["name"] = "study"
    cfg["paths"] = {"data": "data", "results": "results"}
    write_config(tmp_path / "study.yaml", cfg)
    tables = tmp_path / "results" / "study" / "tables"
    tables.mkdir(parents=True)
    rows = [("dmae", 0.5, 61.0, 50.0), ("rs", 0.5, 58.0, 45.0), ("dmae", 0.25, 70.0, 52.0),
            ("rs", 0.25, 69.0, 49.5)]
    (tables / "certified_accuracy.csv").write_text(
        "method,sigma,images,r=0,r=0 lo,r=0 hi,r=0.5,ACR\n"
        + "".join(f"{m},{s},100,{a},{a - 5},{a + 4},{b},0.4\n" for m, s, a, b in rows))
    (tables / "base_classifiers.csv").write_text(
        "method,sigma,epoch,val acc %,val smoothed acc %\n"
        + "".join(f"{m},{s},1,60.0,{a + 1}\n" for m, s, a, _ in rows))
    return "study.yaml"


def test_update_readme_rewrites_every_block_from_its_config_and_nothing_else(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # block configs and results paths are relative to it
    config = _study(tmp_path)
    readme = tmp_path / "README.md"
    head, middle, tail = "# Title\n\nintro\n", "\nbetween\n", "\n## Next\n"
    readme.write_text(f"{head}{start_marker(config, 'table')}\nold\n{END}{middle}"
                      f"{start_marker(config, 'table')}\n{END}{tail}")
    assert update_readme(readme)
    text = readme.read_text()
    blocks = text.split(END)
    assert len(blocks) == 3 and blocks[0].startswith(head) and blocks[2] == tail
    assert blocks[1].startswith(middle) and "old" not in text
    table = blocks[0].split(start_marker(config, "table"))[1]
    assert table == blocks[1].split(start_marker(config, "table"))[1]
    rows = [line.split(" | ")[:4] for line in table.strip().splitlines()[2:]]
    # the config's order (methods rs, dmae; each by sigma), not the file's
    assert rows == [["| rs", "0.25", "70.0", "69.0 ±5.0"], ["| rs", "0.5", "59.0", "58.0 ±5.0"],
                    ["| dmae", "0.25", "**71.0**", "**70.0 ±5.0**"],
                    ["| dmae", "0.5", "62.0", "61.0 ±5.0"]]
    assert not update_readme(readme)  # unchanged
    check_readme(readme)

    readme.write_text(text.replace("58.0 ±5.0", "58.1 ±5.0", 1))  # one hand-edited cell
    with pytest.raises(ValueError, match=r"results of study.yaml table \(line 4\) differ"):
        check_readme(readme)


@pytest.mark.parametrize("text, error", [
    ("# no markers\n", "no generated results block"),
    (f"x\n{start_marker('study.yaml', 'plot')}\n{END}\n", r"README.md:2: unknown view 'plot'"),
    (f"{start_marker('study.yaml', 'table')}\n", "has no '<!-- results:end -->'"),
    (f"{start_marker('study.yaml', 'table')}\n{start_marker('study.yaml', 'table')}\n{END}\n",
     "README.md:1: results block of study.yaml has no"),
    (f"{start_marker('missing.yaml', 'table')}\n{END}\n", "names missing.yaml, which does not"),
    # a mistyped marker (no view) around hand-written text, and an end without a start
    (f"{start_marker('study.yaml', 'table')}\n{END}\n"
     f"{start_marker('study.yaml', 'table').replace(' table ', ' ')}\nhand\n{END}\n",
     "README.md:3: a results marker that belongs to no block"),
    (f"x\n{END}\n", "README.md:2: a results marker that belongs to no block"),
])
def test_a_malformed_readme_is_refused_and_left_as_it_was(tmp_path, monkeypatch, text, error):
    monkeypatch.chdir(tmp_path)
    _study(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        update_readme(readme)
    assert readme.read_text() == text


def test_seed_claims_tell_all_overlap_and_no():
    import pandas as pd

    from dmae.report.readme import seed_claims

    def row(recipe, label, mean, lo, hi):
        return {"method": label, "recipe": recipe, "sigma": "best", "seeds": 3,
                "r=1 mean": mean, "r=1 min": lo, "r=1 max": hi}

    spread = pd.DataFrame([row("dmae", "DMAE + CR", 40.0, 38.0, 42.0),
                           row("rs", "RS", 30.0, 28.0, 33.0),
                           row("mae", "MAE + CR", 39.0, 36.0, 41.0)])
    text = seed_claims(spread)
    assert "| DMAE + CR > RS | best | +10.0 **all** |" in text
    assert "| DMAE + CR > MAE + CR | best | +1.0 overlap |" in text
    assert seed_claims(spread[spread["recipe"] != "dmae"]) == ""  # no claim can be judged
    spread.loc[0, ["r=1 mean", "r=1 min", "r=1 max"]] = [29.0, 27.0, 31.0]
    assert "| DMAE + CR > RS | best | -1.0 no |" in seed_claims(spread)
    nothing = spread.copy()
    nothing[["r=1 mean", "r=1 min", "r=1 max"]] = 0.0
    assert "| DMAE + CR > RS | best | — |" in seed_claims(nothing)


def test_seed_findings_say_where_each_claim_holds_for_every_seed():
    import pandas as pd

    from dmae.report.readme import seed_findings

    radii = ["r=0", "r=0.5", "r=1", "r=1.5"]

    def row(recipe, label, sigma, cells):
        out = {"method": label, "recipe": recipe, "sigma": sigma, "seeds": 3}
        for column, (mean, lo, hi) in zip([*radii, "ACR"], cells, strict=True):
            out |= {f"{column} mean": mean, f"{column} min": lo, f"{column} max": hi}
        return out

    dmae = [(80, 79, 81), (60, 58, 62), (40, 39, 41), (20, 19, 21), (0.6, 0.5, 0.7)]
    rs = [(81, 80, 82), (50, 48, 52), (39, 35, 40), (10, 9, 11), (0.5, 0.45, 0.55)]
    spread = pd.DataFrame([row("dmae", "DMAE", s, dmae) for s in ("0.5", "best")]
                          + [row("rs", "RS", s, rs) for s in ("0.5", "best")])
    text = seed_findings(spread)
    assert ("- **DMAE beats RS** (best over sigma): for every seed pairing at r = 0.5 and 1.5; "
            "on the mean only (seed ranges overlap) at r = 1 and in ACR; not at all (RS ahead "
            "on the mean) at r = 0.") in text, text
    assert "at most 4.0 points for DMAE and 5.0 points for RS." in text, text
    # the seed ranges decide: RS's best seed reaching DMAE's worst turns "every" into "mean"
    spread.loc[spread["recipe"] == "rs", "r=1.5 max"] = 19.0
    assert "for every seed pairing at r = 0.5;" in seed_findings(spread)
    assert seed_findings(spread[spread["recipe"] != "rs"]).count("beats") == 0


def test_the_seed_table_lists_the_recipes_in_the_configs_order_with_the_reports_cells():
    from dmae.report.readme import _seed_spread, _seed_table, seeds_results_dir

    cfg = cfglib.load(REPO / "config" / "default.yaml")
    table = REPO / seeds_results_dir(cfg) / "tables" / "seed_spread.md"
    rendered = _seed_table(_seed_spread(table.with_suffix(".csv"), cfg)).splitlines()
    committed = table.read_text().strip().splitlines()
    assert rendered[:2] == committed[:2]  # the same header
    assert sorted(rendered[2:]) == sorted(committed[2:])  # the same rows, maybe reordered
    methods = [row.split(" | ")[0].lstrip("| ") for row in rendered[2:]]
    labels = [spec["label"] for spec in cfg["methods"].values()]
    assert list(dict.fromkeys(methods)) == labels


def _certify_budget():
    spec = importlib.util.spec_from_file_location(
        "certify_budget", REPO / "benchmarks" / "certify_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_certification_budget_tables_are_those_of_the_committed_figures():
    """README.md's and benchmarks/README.md's adaptive-certification tables are written by
    `benchmarks/certify_budget.py --readmes` from benchmarks/figures/, not typed."""
    budget = _certify_budget()
    blocks = budget.readme_blocks()
    assert len(blocks[REPO / "benchmarks" / "README.md"]) == len(budget.SETTINGS)
    for path, named in blocks.items():
        text = path.read_text()
        for name, body in named.items():
            assert budget.write_block(text, name, body, path) == text, (path, name)
    # a figure that moves moves the table
    figures = budget.committed_figures()
    setting = next(iter(figures))
    figures[setting]["settings"][setting]["table"][0]["passes/image"] += 1
    assert budget.setting_block(setting, figures[setting]) != blocks[
        REPO / "benchmarks" / "README.md"][setting]
