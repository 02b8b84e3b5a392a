"""Start the real app on a free port and drive it with Debian's Chromium through Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from e2e_helpers import running_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    """``(url, workspace folder)`` of one app process shared by the browser tests."""
    workspace = tmp_path_factory.mktemp("workspace")
    with running_app(workspace) as url:
        yield url, workspace


@pytest.fixture(scope="session")
def app_url(app):
    return app[0]


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                # A synthetic camera, so the webcam capture can be clicked through.
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, accept_downloads=True, permissions=["camera"]
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    page.get_by_text("Your workspace is ready").wait_for()
    yield page
    context.close()
