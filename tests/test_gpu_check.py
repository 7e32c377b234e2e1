"""benchmarks/gpu_check.sh --dry: the GPU check runs end to end at tiny sizes on the CPU and
prints its one table, so the script is ready when a GPU is (its figures are not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

COLUMNS = ["check", "model", "precision", "batch", "value", "unit", "peak GiB", "seconds",
           "note"]


def table(stdout: str) -> list[dict[str, str]]:
    """The Markdown table's rows as dicts keyed by its header."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS
    assert set(lines[1].strip("|").split("|")) == {"---"}
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert all(len(row) == len(COLUMNS) for row in rows)
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_dry_run_prints_every_row(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--dry", "--cores", "1",
                           "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DRY RUN" in proc.stdout
    rows = table(proc.stdout)
    by_key = {(r["check"], r["precision"], r["batch"]): r for r in rows}
    for precision in ("bf16", "fp32"):
        for batch in ("4", "10"):  # the dry stand-ins for batch 400 and 1000
            forward = by_key[("forward", precision, batch)]
            certify = by_key[("certify", precision, batch)]
            ratio = by_key[("ratio", precision, batch)]
            assert number(forward["value"]) > 0 and number(certify["value"]) > 0
            assert number(ratio["value"]) > 0 and ratio["unit"] == "certify / forward"
    checks = [r["check"] for r in rows]
    for check in ("s/image", "host syncs", "pretrain", "finetune CR",
                  "smoke (snakemake -n)", "projected: Table 1 certification",
                  "projected: Table 3 certification", "projected: ViT-B pretraining",
                  "projected: ViT-B fine-tuning, CR"):
        assert check in checks, check
    # the sampling loop reads nothing back per batch: the final transfer is the only wait
    assert number(next(r for r in rows if r["check"] == "host syncs")["value"]) == 1
    smoke = next(r for r in rows if r["check"].startswith("smoke"))
    assert smoke["unit"] == "s" and smoke["note"].endswith("jobs"), smoke
    assert all(number(r["value"]) > 0 and r["unit"] == "GPU-hours"
               for r in rows if r["check"].startswith("projected"))
    assert all(r["peak GiB"] == "-" for r in rows)  # no GPU memory on the CPU
    saved = json.loads(out.read_text())
    assert saved["dry"] is True and len(saved["rows"]) == len(rows)
