"""A set of pictures to compare with a model's training pictures: a folder, its sub-folders as
labels when every picture is in one, every file that cannot be used named with the reason.

Unlike :func:`studio.data.dataset.load_dataset` it needs no classes (new pictures often come
unlabelled) and does no split: it is one set, to measure or to adapt to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data.images import is_image_name
from ..errors import StudioError

__all__ = ["PictureSet", "load_pictures"]


@dataclass
class PictureSet:
    """Pictures by path, with a label each when the folder is labelled (else ``None``)."""

    root: Path
    paths: list[str]
    labels: list[str | None]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def labelled(self) -> bool:
        return bool(self.paths) and all(label is not None for label in self.labels)

    @property
    def classes(self) -> list[str]:
        return sorted({label for label in self.labels if label is not None})

    def keep(self, kept: list[int], skipped: list[tuple[str, str]]) -> PictureSet:
        """The set without pictures that failed to decode (named in ``skipped``)."""
        return PictureSet(self.root, [self.paths[i] for i in kept],
                          [self.labels[i] for i in kept], self.skipped + skipped)  # fmt: skip


def load_pictures(folder: str | Path, what: str = "pictures") -> PictureSet:
    """Every picture under ``folder`` (hidden files and non-pictures skipped and named). A
    picture directly in a sub-folder is labelled by it; pictures at the top are unlabelled."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise StudioError(f"{what}: {root} is not a folder")
    paths, labels, skipped = [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            if not is_image_name(path):
                skipped.append((str(path), "not a picture (by its name)"))
                continue
            rel = path.relative_to(root).parts
            paths.append(str(path))
            labels.append(rel[0] if len(rel) == 2 else None)
    if not paths:
        why = f" ({len(skipped)} other files skipped)" if skipped else ""
        raise StudioError(f"{what}: no pictures in {root}{why}")
    return PictureSet(root, paths, labels, skipped)
