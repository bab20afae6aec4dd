"""Browser fixtures: Debian's chromium driven by Playwright (never `playwright install`), on the shared server."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("/usr/bin/chromium is missing; CI must install Debian's chromium (apt-get install chromium)")
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium); browser tests skipped")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def live_server(plain_server):
    """The session's shared plain server (tests/conftest.py): a browser test compares before and after, never
    assumes an empty outputs/, and puts back any setting it changes."""
    return plain_server


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(live_server.url + "/")
    pg.wait_for_selector("#txt2img_prompt textarea")
    yield pg
    context.close()
