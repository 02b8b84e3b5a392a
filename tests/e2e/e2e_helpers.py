"""Helpers for the browser tests (a uniquely named module: both conftest files are 'conftest')."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(workspace: Path, port: int | None = None):
    """Run ``studio app`` on ``port`` (a free one by default) until the block ends; yields URL."""
    port = port or free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "STUDIO_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "STUDIO_MAX_TRAININGS": "1",  # one at a time, whatever the machine: tests see the line
        # Its own cache, as on a new computer: no speeds measured before, facts read from timm.
        "STUDIO_CACHE": str(workspace / ".studio-cache"),
    }
    with open(workspace / f"app-{port}.log", "a") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "studio",
                "app",
                "--port",
                str(port),
                "--workspace",
                str(workspace),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.time() + 120
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(Path(log.name).read_text()) from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def shot(page, name: str) -> None:
    """Save a screenshot for the README (only when STUDIO_SCREENSHOTS=1)."""
    if os.environ.get("STUDIO_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)
