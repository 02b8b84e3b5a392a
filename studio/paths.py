"""Where the studio keeps files it makes for itself (extracted zips, feature caches)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "package_root", "assets_dir"]


def cache_dir(*parts: str) -> Path:
    """A folder under ``$STUDIO_CACHE`` (default ``~/.cache/transfer-studio``), created on demand."""
    root = Path(os.environ.get("STUDIO_CACHE") or Path.home() / ".cache" / "transfer-studio")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_root() -> Path:
    """The folder that holds the ``studio`` package (the repository root in a checkout)."""
    return Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    """The repository's ``assets/`` folder (the example dataset and other shipped files)."""
    return package_root() / "assets"
