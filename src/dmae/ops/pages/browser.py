"""Headless Chromium through Playwright, with the network blocked.

Playwright drives Debian's ``chromium`` on PATH (no ``playwright install``: its own browser
is not used); the ``CHROMIUM`` environment variable names another binary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

CHROMIUM_ENV = "CHROMIUM"
WINDOW = (1280, 900)


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or did not answer in time."""


def find_chromium() -> str:
    """The Chromium executable: $CHROMIUM if set, else ``chromium`` on PATH."""
    name = os.environ.get(CHROMIUM_ENV) or "chromium"
    path = shutil.which(name)
    if path is None:
        raise BrowserError(
            f"Chromium executable {name!r} not found: install Debian's (apt-get install "
            f"chromium) or set {CHROMIUM_ENV} to a Chromium or Chrome binary")
    return path


def first_line(err: PlaywrightError) -> str:
    """Playwright's message without the call it names, the stack or the call log."""
    return re.sub(r"^[\w.]+: ", "", err.message.splitlines()[0])


@contextlib.contextmanager
def chromium_page(executable: str | None, timeout: float):
    """A page of a new headless Chromium, closed on leaving; BrowserError if it fails."""
    executable = executable or find_chromium()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=executable, timeout=timeout * 1000,
                # Chromium refuses to start as root with its sandbox (CI and containers run
                # as root); it opens only the local pages we give it.
                chromium_sandbox=os.geteuid() != 0,
                # No host resolves: a page that needs the network fails the same way
                # everywhere (the checks report every network request besides).
                args=["--host-resolver-rules=MAP * ~NOTFOUND"])
        except PlaywrightError as err:
            raise BrowserError(f"Chromium ({executable}) did not start: {err.message}") from None
        try:
            yield browser.new_page(viewport={"width": WINDOW[0], "height": WINDOW[1]},
                                   device_scale_factor=1)
        except PlaywrightError as err:
            raise BrowserError(f"Chromium ({executable}) failed: {err.message}") from None
        finally:
            with contextlib.suppress(PlaywrightError):
                browser.close()
