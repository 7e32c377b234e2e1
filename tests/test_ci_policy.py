"""The run's own rules (tests/ci_policy.py), on small test files run by a real pytest: a
skip CI does not accept fails a CI run, an accepted one does not, and a test that writes
into the watched checkout fails the run whatever the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

TESTS = REPO / "tests"


def pytest_run(tmp_path: Path, body: str, *, ci: bool, checkout: Path | None = None):
    (tmp_path / "test_it.py").write_text("import pytest\n\n" + body)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DMAE_TEST_CHECKOUT")}
    env |= {"PYTHONPATH": str(TESTS), **({"CI": "true"} if ci else {}),
            **({"DMAE_TEST_CHECKOUT": str(checkout)} if checkout else {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_policy", "-q",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tmp_path / "test_it.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True)


SKIP_FOR_A_PACKAGE = ('def test_a():\n    pytest.skip("SLURM not installed")\n\n\n'
                      "def test_b():\n    pass\n")


def test_a_skip_for_a_missing_package_fails_a_ci_run(tmp_path):
    proc = pytest_run(tmp_path, SKIP_FOR_A_PACKAGE, ci=True)
    assert proc.returncode == 1, proc.stdout
    assert "skips a CI run does not accept" in proc.stdout
    assert "test_it.py::test_a: SLURM not installed" in proc.stdout
    local = pytest_run(tmp_path, SKIP_FOR_A_PACKAGE, ci=False)
    assert local.returncode == 0, local.stdout


def test_a_skip_the_list_allows_passes_a_ci_run(tmp_path):
    allowed = (TESTS / "allowed_skips.txt").read_text().splitlines()
    reason = next(line for line in allowed if line and not line.startswith("#"))
    proc = pytest_run(tmp_path, f"def test_a():\n    pytest.skip({reason!r})\n", ci=True)
    assert proc.returncode == 0, proc.stdout


def test_a_test_that_writes_into_the_checkout_fails_the_run(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)
    body = (f"def test_a():\n    open({str(checkout / 'left.txt')!r}, 'w').write('x')\n")
    proc = pytest_run(tmp_path, body, ci=False, checkout=checkout)
    assert proc.returncode == 1, proc.stdout
    assert "the tests changed the checkout" in proc.stdout and "left.txt" in proc.stdout
