"""Debian's Chromium driven by Playwright's Python package (the browser is /usr/bin/chromium,
never `playwright install`), for the console's browser tests: the launch and the login form."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.fixtures import _unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A persistent Chromium context in a profile of its own (removed at the end), 1280 x 900.
    Chromium missing fails the test (skipped only with KSR_TESTS_ALLOW_SKIP=1 outside CI)."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable("chromium", f"{CHROMIUM} missing: scripts/install-system-deps chromium")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="ksr-console-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1280, "height": 900},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def log_in(page: Any, base_url: str, token: str, *, who: str = "alice") -> None:
    """The console's login form (name and token), landing on the overview."""
    page.goto(base_url + "/ui/login")
    page.fill("input[name=who]", who)
    page.fill("input[name=token]", token)
    page.click("form.stack button")
    page.wait_for_url(base_url + "/ui/")
