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


def gpu_check(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--dry", "--cores", "1",
                           *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)


def test_dry_run_prints_every_row(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = gpu_check(tmp_path, "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: a FAILED row
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
    for check in ("s/image", "host syncs", "pretrain", "finetune CR", "s/image compiled",
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


def test_a_failing_step_loses_only_its_own_rows(capsys, monkeypatch):
    """A section that raises (a compile, an out-of-memory) becomes one FAILED row naming the
    error, printed at once; the sections around it keep theirs, and a projection whose rate
    was never measured says so instead of failing the table."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    def ok(check: str):
        return lambda: [gpu_check.Row(check, "m", "bf16", "4", 1.0, "s", None, 0.1)]

    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB | more\nsecond line")

    rows: list = []
    cpu = gpu_check.torch.device("cpu")
    for name, produce in (("first", ok("first")), ("compiled", out_of_memory),
                          ("last", ok("last"))):
        gpu_check.run_section(name, produce, rows, cpu)
    printed = table("| " + " | ".join(COLUMNS) + " |\n|---|---|---|---|---|---|---|---|---|\n"
                    + capsys.readouterr().out)
    assert [(r["check"], r["value"]) for r in printed] == [
        ("first", "1"), ("compiled", "FAILED"), ("last", "1")]
    assert printed[1]["note"] == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB / more"
    assert rows[1].value == "FAILED"

    projected = gpu_check.projection_rows({"certify": {}, "train": {}}, gpu_check.FULL)
    assert len(projected) == 4
    assert all(r.value == "skipped" and r.note.startswith("no measured ") for r in projected)


def test_cuda_asked_for_where_there_is_none_is_refused(tmp_path):
    proc = gpu_check(tmp_path, "--device", "cuda")
    assert proc.returncode == 2 and "torch sees no CUDA device" in proc.stderr, proc.stderr


def test_a_python_without_the_packages_is_told_what_is_missing(tmp_path):
    # -S: no site-packages, as a GPU image's Python lacks packages the project needs
    proc = subprocess.run([sys.executable, "-S", str(REPO / "benchmarks" / "gpu_check.py"),
                           "--dry"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    assert "cannot import" in proc.stderr and ".gpu-wheels" in proc.stderr, proc.stderr


def test_the_time_limit_stops_the_check_and_says_so(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "",
           "GPU_CHECK_LIMIT_S": "1"}  # torch alone takes longer to import
    proc = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--dry"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 124, proc.stderr
    assert "stopped after 1 s (GPU_CHECK_LIMIT_S)" in proc.stderr
