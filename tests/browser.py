"""Browser fixtures shared by every test package: Debian's chromium driven by
Playwright (never a downloaded browser). One session-wide browser: Playwright's sync
API allows one instance per thread.

Playwright's sync API runs an asyncio loop in the test thread; Django refuses ORM
calls from a thread with a running loop unless told it is fine (it is: the loop only
drives the browser), so the browser fixture sets DJANGO_ALLOW_ASYNC_UNSAFE while it
lives.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            "/usr/bin/chromium is absent; install Debian's chromium "
            "(apt-get install -y chromium) to run the browser tests"
        )
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    # Any alert/confirm/prompt means content ran script: record and dismiss it.
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    page.js_errors = errors  # type: ignore[attr-defined]
    yield page
    # Let the page's own requests (prefetch, label retries) finish before the test
    # database is flushed: a request still holding row locks while TRUNCATE runs
    # deadlocks the flush.
    # (The page may be gone or its server dead: close anyway.)
    with contextlib.suppress(Exception):
        page.wait_for_function(
            "() => !window.pairloopStats || window.pairloopStats.idle", timeout=5_000
        )
    page.goto("about:blank")
    context.close()
    time.sleep(0.2)  # a request the server already accepted finishes its transaction
