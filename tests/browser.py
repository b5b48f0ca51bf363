"""A real browser for tests: Debian's chromium driven by playwright (PyPI), never a downloaded one.

``pytest.importorskip``-style: :func:`chromium` skips the calling test, with the reason, where
playwright or the chromium binary is missing (``.ci/run`` installs both). Pages are opened with
every request that would leave the machine refused and noted, so a test can fail on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

# Debian's package; the PLAYWRIGHT_CHROMIUM variable names another binary (e.g. on a laptop).
CHROMIUM = os.environ.get("PLAYWRIGHT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PHONE = {"width": 375, "height": 812}
LAPTOP = {"width": 1280, "height": 800}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def local(url: str) -> bool:
    """Whether ``url`` stays on this machine (a file, inline data, or the loopback)."""
    parts = urlsplit(url)
    if parts.scheme in {"file", "data", "blob", "about", "chrome", "devtools"}:
        return True
    return parts.scheme in {"http", "https", "ws", "wss"} and (parts.hostname or "") in LOCAL_HOSTS


@contextmanager
def chromium() -> Iterator[object]:
    """A launched headless chromium (playwright's Browser); skips the test where there is none."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -r requirements.txt)")
    if not os.path.isfile(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium; never `playwright install`)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: chromium's own sandbox refuses to start as root (CI runs as root).
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def offline_page(browser, viewport: dict, leaks: list[str]):
    """A new page of size ``viewport`` whose requests leaving the machine are refused and added to
    ``leaks``."""
    context = browser.new_context(viewport=viewport)

    def route(request_route, request) -> None:
        if local(request.url):
            request_route.continue_()
        else:
            leaks.append(request.url)
            request_route.abort()

    context.route("**/*", route)
    return context.new_page()
