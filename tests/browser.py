"""Headless Debian Chromium for the dashboard tests, driven by playwright (no `playwright install`).

The flags keep Chromium off the network (this machine has none: background fetches would fail loudly).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MARKS = [pytest.mark.browser,
         pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")]


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched browser (playwright's ``Browser``), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
