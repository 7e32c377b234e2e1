"""What a test run may not do, checked at its end (conftest.py loads this plugin):

- with CI set, skip a test for a reason other than those of tests/allowed_skips.txt: a skip
  for a missing package is an install that failed, and a CI run that is green without those
  tests would prove nothing about them;
- change the checkout it runs from (`git status` before and after): tests write in their own
  temporary folders, so that a test killed halfway leaves the repository as it was.

Either fails the run, naming the tests or the files. ``DMAE_TEST_CHECKOUT`` names another
checkout to watch (this plugin's own tests use it).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ALLOWED_SKIPS = tuple(line.strip() for line in (TESTS / "allowed_skips.txt").read_text()
                      .splitlines() if line.strip() and not line.startswith("#"))
_BEFORE = pytest.StashKey[set]()
_WRITTEN = pytest.StashKey[list]()
_refused: list[str] = []  # this session's skips that CI does not accept


def checkout() -> Path:
    return Path(os.environ.get("DMAE_TEST_CHECKOUT", TESTS.parent))


def changes(root: Path) -> set[str]:
    """`git status` of ``root``, one entry per changed or new file (empty outside git)."""
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                          capture_output=True, text=True)
    return set(proc.stdout.splitlines()) if proc.returncode == 0 else set()


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = changes(checkout())
    _refused.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        reason = skip_reason(report)
        if not reason.startswith(ALLOWED_SKIPS):
            _refused.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    written = sorted(changes(checkout()) - session.config.stash.get(_BEFORE, set()))
    session.config.stash[_WRITTEN] = written
    if (written or _refused) and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if refused := list(_refused):
        terminalreporter.section("skips a CI run does not accept (tests/allowed_skips.txt)",
                                 red=True)
        terminalreporter.line("\n".join(refused))
    if written := config.stash.get(_WRITTEN, []):
        terminalreporter.section(f"the tests changed the checkout {checkout()} (git status)",
                                 red=True)
        terminalreporter.line("\n".join(written))
