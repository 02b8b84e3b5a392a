"""Small builders shared by the tests (imported as ``helpers``; conftest modules are not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size=(64, 48), color=(200, 30, 30), mode="RGB", seed=0) -> Path:
    """A small random-texture image, so that different seeds are not near-duplicates."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    arr = (arr * 0.5 + np.array(color) * 0.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def assert_one_line_error(capsys, argv, message: str) -> None:
    """``studio ARGV`` exits 2 with ``message`` on one line of stderr (no traceback)."""
    from studio.cli import main

    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], (argv, err)
