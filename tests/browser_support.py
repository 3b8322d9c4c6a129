"""Headless Chromium for the browser tests: Debian's ``chromium`` (``make system-deps``) driven by Playwright, which
downloads no browser of its own. The flags keep it off the network this machine does not have (background
networking, component updates and sync would each try to connect) and let videos play without a user gesture."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = Path(os.environ.get("ASSAY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright ``Browser`` on Debian's Chromium, closed afterwards."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make system-deps` (Debian package chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_until(page: Any, expression: str, timeout: float = 20.0) -> None:
    """Poll a JS expression from Python (the annotation app's CSP forbids the eval that page.wait_for_function
    uses)."""
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)
