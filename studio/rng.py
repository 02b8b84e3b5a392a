"""Randomness that belongs to one run, even while other runs train in the same process.

Head initialisation, dropout, drop-path and the augmentation transforms draw from the global
random generators of Python, NumPy and PyTorch; PyTorch offers no per-module generator for
dropout. When two people train at once in one app, two threads would interleave their draws and
neither run would repeat. So every step that draws runs inside :func:`seeded`: it holds one
process-wide lock and seeds the global generators from the run's own seed and the step's
number, so a step draws the same numbers whatever else is running. Steps of different runs
interleave (batch by batch) instead of overlapping; on a CPU one step already uses every core.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["seeded", "step_seed"]

_LOCK = threading.RLock()


def step_seed(seed: int, *step: int) -> int:
    """A seed for one step of a run: ``step_seed(seed, epoch, batch)``; distinct steps of one
    run, and the same step of runs with different seeds, get different seeds."""
    value = int(seed)
    for part in step:
        value = (value * 1_000_003 + int(part) + 7919) % 2**63
    return value


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Hold the process's random generators, seeded with ``seed``, for the block."""
    with _LOCK:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        yield
