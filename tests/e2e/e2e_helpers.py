"""Helpers for the browser tests (a uniquely named module: both conftest files are 'conftest')."""

from __future__ import annotations

import os
from pathlib import Path

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def shot(page, name: str) -> None:
    """Save a screenshot for the README (only when STUDIO_SCREENSHOTS=1)."""
    if os.environ.get("STUDIO_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)
