"""The README's Results section is generated from the committed result files."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from conftest import BIN, REPO

from dmae import config as cfglib
from dmae import reproducibility
from dmae.io import sha256_file
from dmae.report.readme import END, START, run_info, update_readme

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_committed_readme_matches_the_committed_results():
    proc = subprocess.run([str(BIN / "dmae"), "readme-results", "--config",
                           "config/default.yaml", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_run_info_reads_wall_time_and_memory_from_benchmarks(tmp_path):
    cfg = cfglib.load(REPO / "config" / "smoke.yaml")
    cfg["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    bench = tmp_path / "results" / "smoke" / "benchmarks"
    (bench / "finetune").mkdir(parents=True)
    jobs = [(bench / "prepare.tsv", 60.0, 900.0, 1_000_000),  # ran 1000-1060 s
            (bench / "finetune" / "a.tsv", 600.0, 1500.0, 1_000_900)]  # 1000900-1001500 s
    for path, seconds, rss, end in jobs:
        path.write_text(HEADER + f"{seconds}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t0\n")
        os.utime(path, (end, end))
    info = run_info(cfg, REPO)
    assert info["wall_time_min"] == pytest.approx((1_000_900 - (1_000_000 - 60)) / 60, abs=0.1)
    assert info["peak_job_rss_mib"] == 1500 and info["jobs"] == 2
    assert f"CPU ({reproducibility.machine_isa()})" in info["machine"]
    vendor = next(line.split(":")[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("vendor_id"))
    assert info["cpu_vendor"] == {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}[vendor]
    assert info["cpu_isa"] == "avx2" and info["versions"]["torch"] == metadata.version("torch")
    assert info["lock_sha256"] == sha256_file(REPO / "requirements.lock")


def test_update_readme_replaces_only_the_generated_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{START}\nold\n{END}\n\n## Next\n")
    assert update_readme(readme, f"{START}\nnew\n{END}\n")
    assert readme.read_text() == f"# Title\n\nintro\n\n{START}\nnew\n{END}\n\n## Next\n"
    assert not update_readme(readme, f"{START}\nnew\n{END}\n")  # unchanged
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no generated results section"):
        update_readme(readme, "x")


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
