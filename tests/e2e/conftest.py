"""Start the real app on a free port and drive it with Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    """``(url, workspace folder)`` of one app process shared by the browser tests."""
    port = _free_port()
    workspace = tmp_path_factory.mktemp("workspace")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "STUDIO_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    log = open(workspace / "app.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio", "app", "--port", str(port), "--workspace", str(workspace)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((workspace / "app.log").read_text()) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("the app did not start within 120 s")
    yield url, workspace
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


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
