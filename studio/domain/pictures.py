"""A set of pictures to compare with a model's training pictures: a folder, its sub-folders as
labels when every picture is in one, every file that cannot be used named with the reason.

Unlike :func:`studio.data.dataset.load_dataset` it needs no classes (new pictures often come
unlabelled) and does no split: it is one set, to measure or to adapt to. :func:`describe_pictures`
is its data report: what could not be read, duplicates inside the set, and new pictures that are
copies of training pictures (they make a shift look smaller and an accuracy higher than it is).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data.duplicates import copies_between, duplicate_groups
from ..data.facts import PictureFacts, facts_of_many, usable_facts
from ..data.images import is_image_name
from ..errors import StudioError

__all__ = ["PictureSet", "PicturesReport", "load_pictures", "describe_pictures"]


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


@dataclass
class PicturesReport:
    """The data report of a set of new pictures, beside the training pictures."""

    count: int  # pictures that can be used
    per_label: dict[str, int]  # label -> pictures; unlabelled ones are not in it
    unlabelled: int
    skipped: list[tuple[str, str]]  # (path, why)
    exact_duplicates: list[list[str]]  # inside the new pictures
    near_duplicates: list[list[str]]
    copies: list[tuple[str, str, str]]  # (new picture, training picture, identical|near copy)
    unknown_labels: list[str]  # labels the training pictures do not have

    def lines(self) -> list[str]:
        """Plain sentences, most important first."""
        labels = ", ".join(f"{n} {name}" for name, n in self.per_label.items())
        out = [f"{self.count} new pictures: " + ", ".join(
            part for part in (labels, f"{self.unlabelled} unlabelled" if self.unlabelled else "")
            if part)]  # fmt: skip
        if self.copies:
            out.append(
                f"{len(self.copies)} of them are copies of training pictures: they make the two "
                "sets look more alike, and an accuracy measured on them higher, than they are"
            )
        if self.unknown_labels:
            out.append(
                f"labels the training pictures do not have: {', '.join(self.unknown_labels)} "
                "(the model cannot be measured on them)"
            )
        for kind, groups in (("identical", self.exact_duplicates),
                             ("very similar", self.near_duplicates)):  # fmt: skip
            if groups:
                out.append(f"{len(groups)} group(s) of {kind} pictures among the new ones")
        if self.skipped:
            out.append(f"{len(self.skipped)} file(s) could not be used")
        return out


def describe_pictures(
    pictures: PictureSet, training: Sequence[str] = (), classes: Sequence[str] | None = None
) -> PicturesReport:
    """Decode each new picture once (remembered, see :mod:`studio.data.facts`) and report it:
    unusable files, duplicates among the new pictures, copies of the ``training`` pictures and
    labels outside ``classes`` (the training classes, when known)."""
    facts = facts_of_many(pictures.paths)
    skipped = list(pictures.skipped)
    kept: list[int] = []
    for i, f in enumerate(facts):
        if isinstance(f, PictureFacts):
            kept.append(i)
        else:
            skipped.append((pictures.paths[i], f))
    good = [facts[i] for i in kept]
    paths = [pictures.paths[i] for i in kept]
    old_paths, old_facts = usable_facts(list(training))
    exact, near = duplicate_groups(good)
    labels = Counter(pictures.labels[i] for i in kept)
    unlabelled = labels.pop(None, 0)
    known = set(classes) if classes is not None else set(labels)
    return PicturesReport(
        count=len(kept),
        per_label=dict(sorted(labels.items())),
        unlabelled=unlabelled,
        skipped=skipped,
        exact_duplicates=[[paths[i] for i in g] for g in exact],
        near_duplicates=[[paths[i] for i in g] for g in near],
        copies=[(paths[i], old_paths[j], kind) for i, j, kind in copies_between(good, old_facts)],
        unknown_labels=sorted(set(labels) - known),
    )
