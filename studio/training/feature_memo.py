"""A pretrained backbone's pooled features, kept on disk by picture content and shared.

Ranking the backbones (:mod:`studio.transfer.rank`) has each backbone look at the training
pictures; training the chosen one with its whole backbone frozen then needs exactly those
features again: the classifier's input for the plain picture. Both go through this memo, so the
training computes only what the ranking did not see (and a second run on the same pictures
nothing). An entry is one float32 vector per (backbone, its weights file, its preprocessing,
the picture's SHA-1): a copy of a picture in another folder is found too, and a changed weights
file or preprocessing is a different memo. Entries are read with ``allow_pickle=False``.

Two passes over the same picture may batch it differently, which moves the last bits of a
float32 feature (about 1e-6 relative); a run's training cache checks the memo's entries for its
first pictures against its own pass before it uses any (:func:`agrees`), so a memo that does not
hold this backbone's features (a model changed since, a damaged file) is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..models.backbones import WeightsInfo
from ..paths import cache_dir

__all__ = ["FeatureMemo", "TOLERANCE"]

TOLERANCE = 1e-3  # relative: a memo entry this close to a fresh pass is the same feature
DECODE = "jpeg-at-model-size"


class FeatureMemo:
    """Features by picture SHA-1 for one backbone, weights and preprocessing."""

    def __init__(self, backbone: str, weights: WeightsInfo, data_config: dict):
        # DECODE names how pictures are decoded for a model: memos made before large JPEGs
        # were decoded at the model's size (studio.data.loaders.prepared) are not used.
        identity = [backbone, weights.source, weights.path, DECODE]
        if weights.path and Path(weights.path).exists():
            st = Path(weights.path).stat()
            identity += [st.st_size, st.st_mtime_ns]
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}
        identity.append(json.dumps(config, sort_keys=True, default=str))
        key = hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:20]
        root = os.environ.get("STUDIO_FEATURE_MEMO")  # tests give each test its own
        self.folder = (
            Path(root) / f"{backbone}-{key}" if root else cache_dir("features", f"{backbone}-{key}")
        )
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, sha1: str) -> Path:
        return self.folder / sha1[:2] / f"{sha1}.npy"

    def holds(self, sha1: str) -> bool:
        """Whether the memo has an entry for this picture (not read: it may still be damaged)."""
        return self._path(sha1).is_file()

    def get_many(self, sha1s: Sequence[str]) -> dict[int, np.ndarray]:
        """``{position: vector}`` for the pictures of ``sha1s`` the memo holds."""
        found = {}
        for i, sha1 in enumerate(sha1s):
            path = self._path(sha1)
            if path.is_file():
                try:
                    found[i] = np.load(path, allow_pickle=False)
                except (OSError, ValueError):
                    continue  # a damaged entry is computed again (and rewritten)
        return found

    def put_many(self, sha1s: Sequence[str], features: np.ndarray) -> None:
        """Keep one vector per picture; each file appears whole or not at all."""
        for sha1, vector in zip(sha1s, np.asarray(features, dtype=np.float32)):
            path = self._path(sha1)
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, vector, allow_pickle=False)
            os.replace(tmp, path)

    @staticmethod
    def agrees(memo: np.ndarray, fresh: np.ndarray) -> bool:
        """Whether entries of the memo are this backbone's features for these pictures."""
        memo, fresh = np.asarray(memo, np.float64), np.asarray(fresh, np.float64)
        if memo.shape != fresh.shape:
            return False
        scale = max(float(np.abs(fresh).max()), 1e-12)
        return float(np.abs(memo - fresh).max()) <= TOLERANCE * scale
