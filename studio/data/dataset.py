"""Load labelled images from a folder, a zip or a CSV, and report everything about them.

Three layouts are understood:

* a folder of class folders (``cats/1.jpg``, ``dogs/2.png``), split here into train/val/test;
* the same with ``train/ val/ test/`` folders on top (any of val/test may be missing);
* a CSV with columns ``path,labels`` (``labels`` may hold several tags: ``cat;indoor``), which makes
  a multi-label dataset when any row has more than one tag. A folder holding ``labels.csv`` counts.
  A CSV with several label columns instead (``path,material,colour``) is a multi-task dataset:
  one task per column (see :mod:`studio.data.tasks`), each single- or multi-label.

A ``.zip`` of any of these is unpacked safely first (see :mod:`studio.data.safezip`).

Every image is decoded while loading (once per file: :mod:`studio.data.facts` remembers what a
decode told, and the upload's check counts), so a file that would crash training is found here and
named in the :class:`DataReport` with its reason, never silently dropped. The report also lists
exact and near duplicates and, worst of all, the same picture in train and in val/test (leakage),
which makes held-out accuracy a lie. When this module makes the split itself, duplicates are kept
in the same split so it never causes leakage.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..paths import cache_dir
from .duplicates import LARGE_GROUP, duplicate_groups
from .facts import Looker, PictureFacts, facts_of_many
from .images import DEFAULT_MAX_PIXELS, is_image_name
from .safezip import extract_zip
from .tasks import Tasks, flat_name, kind_words

__all__ = [
    "SPLITS",
    "Sample",
    "Skipped",
    "DataReport",
    "Dataset",
    "load_dataset",
    "split_hash",
]

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx"}


@dataclass(frozen=True)
class Sample:
    """One usable image: where it is and which class indices it carries."""

    path: str
    labels: tuple[int, ...]
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why, in words for the person who owns it."""

    path: str
    reason: str


@dataclass
class DataReport:
    """What was found while loading; shown by the CLI, the app and saved with each run."""

    source: str
    layout: str
    classes: list[str]
    multilabel: bool
    counts: dict[str, dict[str, int]]  # split -> class -> images with that label
    skipped: list[Skipped] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    exact_duplicates: list[list[str]] = field(default_factory=list)
    near_duplicates: list[list[str]] = field(default_factory=list)
    leakage: list[list[str]] = field(default_factory=list)  # [earlier split, later split] pairs
    conflicting_labels: list[list[str]] = field(default_factory=list)
    min_size: tuple[int, int] = (0, 0)
    max_size: tuple[int, int] = (0, 0)
    warnings: list[str] = field(default_factory=list)
    # split -> images; not the sum of ``counts``: a multi-label picture counts once per tag there
    images: dict[str, int] = field(default_factory=dict)
    tasks: list[dict] | None = None  # a multi-task CSV's tasks (Tasks.to_json), else None

    @property
    def total(self) -> int:
        """Usable images over all splits."""
        return sum(self.images.values())

    def per_class(self) -> dict[str, int]:
        """Usable images per class, all splits together."""
        totals: Counter[str] = Counter()
        for per_class in self.counts.values():
            totals.update(per_class)
        return {name: totals.get(name, 0) for name in self.classes}

    def to_dict(self) -> dict:
        """A JSON-ready copy."""
        out = asdict(self)
        out["total"] = self.total
        return out

    def summary(self) -> str:
        """A few plain lines: what was loaded, what was left out and what to watch for."""
        if self.tasks:
            names = ", ".join(t["name"] for t in self.tasks)
            how = f"{len(self.tasks)} tasks: {names}"
        else:
            how = "multi-label" if self.multilabel else "one label per image"
        lines = [f"{self.total} images in {len(self.classes)} classes ({how}), from {self.source}"]
        for t in self.tasks or []:
            lines.append(
                f"  task '{t['name']}' ({kind_words(t['multilabel'])}): {', '.join(t['labels'])}"
            )
        for split in SPLITS:
            if self.counts.get(split):
                parts = ", ".join(f"{k}: {v}" for k, v in self.counts[split].items())
                lines.append(f"  {split:5s} {self.images.get(split, 0):5d}  ({parts})")
        if self.total:
            lines.append(
                f"  image sizes from {self.min_size[0]}x{self.min_size[1]} "
                f"to {self.max_size[0]}x{self.max_size[1]}"
            )
        if self.skipped:
            lines.append(f"  {len(self.skipped)} file(s) skipped:")
            lines.extend(f"    {s.path}: {s.reason}" for s in self.skipped)
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass
class Dataset:
    """Samples per split plus the report; the only thing training needs to know about the data."""

    classes: list[str]
    splits: dict[str, list[Sample]]
    multilabel: bool
    report: DataReport
    root: Path
    seed: int
    fractions: tuple[float, float] = (0.15, 0.15)  # (validation, test) asked of load_dataset
    # Several tasks (a CSV with one column per task): ``classes`` are then the tasks' values
    # named ``task: value`` in output order, and the targets are multi-hot over all of them.
    tasks: Tasks | None = None

    @property
    def train(self) -> list[Sample]:
        return self.splits.get("train", [])

    @property
    def val(self) -> list[Sample]:
        return self.splits.get("val", [])

    @property
    def test(self) -> list[Sample]:
        return self.splits.get("test", [])

    def held_out(self) -> tuple[str, list[Sample]]:
        """The split to report final metrics on: test when there is one, else val."""
        return ("test", self.test) if self.test else ("val", self.val)

    def split_rows(self) -> list[tuple[str, str, str]]:
        """``(split, relative path, labels)`` for every sample, sorted: what went where."""
        rows = []
        for split, samples in self.splits.items():
            for s in samples:
                rel = os.path.relpath(s.path, self.root)
                rows.append((split, rel, ";".join(self.classes[i] for i in s.labels)))
        return sorted(rows)

    def split_hash(self) -> str:
        """A short fingerprint of the split; two runs with the same hash saw the same data."""
        return split_hash(self.split_rows())


def split_hash(rows: Sequence[tuple[str, str, str]]) -> str:
    """SHA-256 (first 16 hex digits) of ``split, path, labels`` rows."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(("\t".join(row) + "\n").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def readable(name: str) -> str:
    """A file or folder name as text a person can read and any file can hold.

    Names that are not UTF-8 on disk (an old zip, a folder made on Windows) reach Python with
    their odd bytes as surrogate escapes, which cannot be written to a UTF-8 file or shown. Such
    bytes are read as Windows-1252 instead (``caf\\xe9`` -> ``café``), the usual source of them.
    """
    raw = name.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


# --------------------------------------------------------------------------- finding files


@dataclass
class _Candidate:
    path: Path
    labels: tuple[str, ...]
    split: str | None
    task_values: tuple[tuple[str, ...], ...] = ()  # per task column, for a multi-task CSV


def _is_system(path: Path) -> bool:
    return any(part.lower() in _SYSTEM_NAMES or part.startswith("._") for part in path.parts)


def _walk_files(folder: Path) -> list[Path]:
    """Every regular file below ``folder``, sorted, without following symbolic links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        found.extend(Path(dirpath) / name for name in sorted(filenames))
    return found


def _class_folders(
    folder: Path, split: str | None, skipped: list[Skipped], empty: list[str]
) -> list[_Candidate]:
    candidates = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() or entry.is_symlink():
            if not _is_system(entry):
                skipped.append(Skipped(str(entry), "not inside a class folder"))
            continue
        if _is_system(entry):
            continue
        files = [f for f in _walk_files(entry)]
        usable = 0
        for f in files:
            if _is_system(f.relative_to(folder)):
                continue
            if f.is_symlink():
                skipped.append(Skipped(str(f), "symbolic link (not followed)"))
            elif not is_image_name(f):
                skipped.append(Skipped(str(f), f"not an image file ({f.suffix or 'no extension'})"))
            else:
                candidates.append(_Candidate(f, (readable(entry.name),), split))
                usable += 1
        if usable == 0:
            name = readable(entry.name)
            empty.append(name if split is None else f"{split}/{name}")
    return candidates


def _split_folders(root: Path) -> dict[str, Path]:
    found = {}
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.lower() in _SPLIT_ALIASES:
            found[_SPLIT_ALIASES[entry.name.lower()]] = entry
    return found if "train" in found else {}


def _csv_columns(
    fieldnames: Sequence[str] | None, csv_name: str, tasks: Sequence[str] | None
) -> tuple[str, list[str], str | None, bool]:
    """``(path column, label columns, split column, multi-task)`` from a CSV's header.

    ``path,labels`` (or ``label``/``tags``) is one task; any other columns besides the path and
    the split are one task each (``path,material,colour``), or only those named in ``tasks``.
    """
    fields = {(name or "").strip().lower(): name for name in fieldnames or []}
    path_key = fields.get("path") or fields.get("file") or fields.get("filename")
    label_key = fields.get("labels") or fields.get("label") or fields.get("tags")
    split_key = fields.get("split")
    found = ", ".join(n for n in fieldnames or [] if n) or "nothing"
    needs = (
        f"{csv_name} needs a header with columns 'path' and 'labels', or 'path' and one column "
        f"per task such as 'path,material,colour' (found: {found})"
    )
    if not path_key:
        raise DataError(needs)
    if tasks:
        missing = [t for t in tasks if t.strip().lower() not in fields]
        if missing:
            raise DataError(
                f"{csv_name} has no column {', '.join(repr(m) for m in missing)} "
                f"(its columns: {found})"
            )
        return path_key, [fields[t.strip().lower()] for t in tasks], split_key, True
    if label_key:
        return path_key, [label_key], split_key, False
    others = [n for n in fieldnames or [] if n and n not in (path_key, split_key)]
    if not others:
        raise DataError(needs)
    return path_key, others, split_key, len(others) > 1


def _cell_values(cell: str | None) -> tuple[str, ...]:
    """The tags in one label cell: ``cat;indoor`` (``|`` and ``,`` separate too)."""
    raw = (cell or "").replace("|", ";").replace(",", ";")
    return tuple(dict.fromkeys(t.strip() for t in raw.split(";") if t.strip()))


def _read_csv(
    csv_path: Path, skipped: list[Skipped], tasks: Sequence[str] | None = None
) -> tuple[list[_Candidate], list[str] | None]:
    """The CSV's rows as candidates, and its task columns when it is a multi-task CSV."""
    base = csv_path.parent.resolve()
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            path_key, label_keys, split_key, multitask = _csv_columns(
                reader.fieldnames, csv_path.name, tasks
            )
            rows = list(reader)
    except UnicodeDecodeError:
        raise DataError(f"{csv_path.name} is not a UTF-8 text CSV file") from None
    except csv.Error as exc:  # a NUL byte, a field over the csv module's size limit...
        raise DataError(f"{csv_path.name} is not a readable CSV file ({exc})") from None
    for key in label_keys if multitask else ():
        if not any(_cell_values(row.get(key)) for row in rows):
            raise DataError(
                f"the column '{key}' of {csv_path.name} is empty: no row gives it a value"
            )
    candidates = []
    for line_no, row in enumerate(rows, start=2):
        where = f"{csv_path.name}:{line_no}"
        values = tuple(_cell_values(row.get(key)) for key in label_keys)
        found = _csv_row(row, path_key, split_key, base, where, skipped)
        if found is None:
            continue
        path, split = found
        blank = [key for key, v in zip(label_keys, values) if not v]
        if blank:
            what = f"no value for '{blank[0]}'" if multitask else "no label"
            skipped.append(Skipped(str(path), f"{what} ({where})"))
        elif multitask:
            labels = tuple(flat_name(k, x) for k, v in zip(label_keys, values) for x in v)
            candidates.append(_Candidate(path, labels, split, values))
        else:
            candidates.append(_Candidate(path, values[0], split))
    return candidates, (label_keys if multitask else None)


def _csv_row(row: dict, path_key: str, split_key: str | None, base: Path, where: str, skipped):
    """``(path, split)`` of one CSV row, or None with the reason added to ``skipped``."""
    raw_path = (row.get(path_key) or "").strip()
    if not raw_path:
        skipped.append(Skipped(where, "row has no path"))
        return None
    if "\x00" in raw_path:
        skipped.append(Skipped(where, "the path holds a NUL byte"))
        return None
    path = (base / raw_path).resolve()
    if not path.is_relative_to(base):
        skipped.append(Skipped(f"{where} {raw_path}", "path points outside the CSV's folder"))
        return None
    if not path.is_file():
        skipped.append(Skipped(str(path), f"listed in {where} but not found"))
        return None
    said = (row.get(split_key) or "").strip() if split_key else ""
    split = _SPLIT_ALIASES.get(said.lower()) if said else None
    if said and split is None:
        reason = (
            f"unknown split {said[:40]!r} in {where}: use train, val or test, or leave it empty"
        )
        skipped.append(Skipped(str(path), reason))
        return None
    return path, split


# --------------------------------------------------------------------------- checking images


@dataclass
class _Checked:
    candidate: _Candidate
    facts: PictureFacts


def _connected_groups(n: int, links: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices ``0..n-1`` joined by ``links`` into groups (singletons too), each sorted, ordered by
    their smallest index: a stable order, since the seeded split shuffles groups in it."""
    from scipy.sparse import coo_matrix  # imported here: a quarter second the app's start skips
    from scipy.sparse.csgraph import connected_components

    rows = [a for a, _ in links]
    cols = [b for _, b in links]
    graph = coo_matrix((np.ones(len(links)), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(component):
        groups[int(label)].append(i)
    return sorted(groups.values(), key=lambda g: g[0])


# --------------------------------------------------------------------------- splitting


def _assign_splits(
    groups: list[list[int]],
    group_key: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    want: set[str],
) -> dict[int, str]:
    """Stratified, seeded split of whole groups (duplicates never straddle splits).

    Hand-rolled per class rather than scikit-learn's ``train_test_split`` because that refuses
    classes with one or two images, which a classroom dataset often has.
    """
    rng = random.Random(seed)
    by_key: dict[str, list[int]] = defaultdict(list)
    for g, key in enumerate(group_key):
        by_key[key].append(g)
    assignment: dict[int, str] = {}
    for key in sorted(by_key):
        members = by_key[key]
        rng.shuffle(members)
        n = len(members)
        n_test = round(n * test_fraction) if "test" in want else 0
        n_val = round(n * val_fraction) if "val" in want else 0
        if "val" in want and n_val == 0 and n >= 3:
            n_val = 1
        if "test" in want and n_test == 0 and n >= 4:
            n_test = 1
        while n_test + n_val >= n and (n_test or n_val):  # always keep one to train on
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        for pos, g in enumerate(members):
            split = "test" if pos < n_test else "val" if pos < n_test + n_val else "train"
            for i in groups[g]:
                assignment[i] = split
    return assignment


# --------------------------------------------------------------------------- the loader


def load_dataset(
    source: str | Path,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
    tasks: Sequence[str] | None = None,
    looker: Looker | None = None,
) -> Dataset:
    """Load a labelled image collection and check every file in it.

    Args:
        source: A folder (class folders, optionally under ``train/ val/ test/``), a ``.zip`` of
            one, a ``.csv`` with ``path,labels`` columns, or a folder holding ``labels.csv``.
        val_fraction: Share of each class held out for validation when no split is given.
        test_fraction: Share of each class held out for the final test when no split is given.
        seed: Seed for the split; the same seed and files give the same split.
        max_pixels: Larger images are skipped (decompression-bomb guard).
        workers: Threads used to decode images.
        progress: Called as ``progress(done, total)`` while images are checked.
        tasks: The label columns of a CSV to learn, one task each (``["material", "colour"]``);
            None: every column but the path and the split (see :mod:`studio.data.tasks`).
        looker: Also looks at each picture as it is decoded for the check (a model's
            features: :mod:`studio.training.feature_pass`).

    Returns:
        The :class:`Dataset`, whose ``report`` lists everything found.

    Raises:
        DataError: Nothing trainable: fewer than two classes with images, a missing path, a
            broken zip or CSV. The message is one line, written for the user.

    >>> ds = load_dataset("assets/example")  # doctest: +SKIP
    >>> ds.classes
    ['brick', 'grass', 'gravel']
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"{source} does not exist")
    skipped: list[Skipped] = []
    empty: list[str] = []
    root, csv_path = _locate(source)
    if tasks and csv_path is None:
        raise DataError(
            f"tasks ({', '.join(tasks)}) come from a CSV's columns; {source.name} has no CSV"
        )
    layout, candidates, columns = _collect(root, csv_path, skipped, empty, tasks)
    checked = _check_all(candidates, max_pixels, workers, progress, skipped, looker)

    classes = sorted({label for c in checked for label in c.candidate.labels})
    if layout != "csv":  # a class folder whose every image was skipped is empty too
        empty += sorted({c.labels[0] for c in candidates} - set(classes))
    _require_two_classes(source, checked, classes, skipped)
    task_layout = _task_layout(columns, checked) if columns else None
    # Several tasks' targets are multi-hot over every task's values, one task's too.
    multilabel = task_layout is not None or any(len(c.candidate.labels) > 1 for c in checked)
    # The split is stratified by the label (a multi-task picture's: its values together); with
    # tags the combinations are too sparse, and it is random.
    by_tags = any(t.multilabel for t in task_layout) if task_layout else multilabel
    exact, near = duplicate_groups([c.facts for c in checked])
    splits_of = _choose_splits(checked, exact + near, by_tags, val_fraction, test_fraction, seed)
    if task_layout is not None:
        classes = task_layout.flat_labels

    index = {name: i for i, name in enumerate(classes)}
    splits = _assign(checked, splits_of, index)
    found = (skipped, empty, exact, near, splits_of)
    report = _report(str(source), layout, classes, multilabel, splits, checked, found, task_layout)
    fractions = (val_fraction, test_fraction)
    return Dataset(
        classes, splits, multilabel, report, root.resolve(), seed, fractions, task_layout
    )


def _report(source, layout, classes, multilabel, splits, checked, found, tasks) -> DataReport:
    """The :class:`DataReport` of a load: counts, what was skipped, duplicates and leaks
    (``found``: skipped files, empty classes, exact and near groups, each picture's split)."""
    skipped, empty, exact, near, splits_of = found
    index = {name: i for i, name in enumerate(classes)}

    def names(group: list[int]) -> list[str]:
        return [str(checked[i].candidate.path) for i in group]

    leakage, conflicting = _leaks_and_conflicts(checked, exact + near, splits_of, names)
    sizes = [(c.facts.width, c.facts.height) for c in checked]
    report = DataReport(
        source=source,
        layout=layout,
        classes=classes,
        multilabel=multilabel,
        counts={
            split: {name: sum(index[name] in s.labels for s in samples) for name in classes}
            for split, samples in splits.items()
        },
        images={split: len(samples) for split, samples in splits.items()},
        skipped=sorted(skipped, key=lambda s: s.path),
        empty_classes=sorted(set(empty)),
        exact_duplicates=[names(g) for g in exact],
        near_duplicates=[names(g) for g in near],
        leakage=leakage,
        conflicting_labels=conflicting,
        min_size=min(sizes, key=lambda wh: wh[0] * wh[1]),
        max_size=max(sizes, key=lambda wh: wh[0] * wh[1]),
        tasks=tasks.to_json() if tasks else None,
    )
    report.warnings = _warnings(report)
    return report


def _task_layout(columns: list[str], checked: list) -> Tasks:
    """The tasks of a multi-task CSV from the values its usable pictures carry; a task with
    fewer than two values has nothing to learn."""
    specs = []
    for i, name in enumerate(columns):
        cells = [c.candidate.task_values[i] for c in checked]
        values = sorted({v for cell in cells for v in cell})
        if len(values) < 2:
            raise DataError(
                f"the task '{name}' has only one value ({', '.join(values)}) in the usable "
                "pictures: a task needs at least two values to learn"
            )
        specs.append((name, values, any(len(cell) > 1 for cell in cells)))
    return Tasks.build(specs)


def _assign(checked: list, splits_of: list[str], index: dict[str, int]) -> dict[str, list[Sample]]:
    """The samples of each split that has any, labels as class indices."""
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for c, split in zip(checked, splits_of):
        labels = tuple(sorted(index[name] for name in c.candidate.labels))
        splits[split].append(Sample(str(c.candidate.path), labels, c.facts.width, c.facts.height))
    return {k: v for k, v in splits.items() if v}


def _require_two_classes(source: Path, checked: list, classes: list[str], skipped: list) -> None:
    """Nothing to train on: no usable picture, or fewer than two classes with pictures."""
    if not checked:
        raise DataError(
            f"no usable images in {source}"
            + (f" ({len(skipped)} file(s) skipped, see the report)" if skipped else "")
        )
    if len(classes) < 2:
        raise DataError(
            f"need at least two classes with images to train; found {len(classes)} "
            f"({', '.join(classes)})"
        )


def _leaks_and_conflicts(checked: list, groups: list[list[int]], splits_of: list[str], names):
    """``(leakage, conflicting)``: copies of one picture in two splits (the earliest copy paired
    with each copy elsewhere), and copies that carry different labels."""
    leakage, conflicting = [], []
    for group in groups:
        ordered = sorted(group, key=lambda i: SPLITS.index(splits_of[i]))
        first = ordered[0]
        leakage += [names([first, i]) for i in ordered[1:] if splits_of[i] != splits_of[first]]
        if len({checked[i].candidate.labels for i in group}) > 1:
            conflicting.append(names(group))
    return leakage, conflicting


def _locate(source: Path) -> tuple[Path, Path | None]:
    """The folder the images are in (a zip unpacked first) and the CSV, if labels come from one."""
    root = _unpacked(source) if source.is_file() and source.suffix.lower() == ".zip" else source
    if root.is_file() and root.suffix.lower() == ".csv":
        return root.parent, root
    if root.is_dir():
        return root, (root / "labels.csv" if (root / "labels.csv").is_file() else None)
    raise DataError(f"{source.name} is not a folder, a .zip or a .csv file")


def _unpacked(zip_path: Path) -> Path:
    """Unpack once per distinct zip (by content) into the cache; a half unpack is redone."""
    digest = hashlib.sha1(zip_path.read_bytes()).hexdigest()[:16]
    target = cache_dir("zips", digest)
    marker = target / ".complete"
    if not marker.exists():
        for child in target.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        content = extract_zip(zip_path, target / "content")
        marker.write_text(str(content.relative_to(target)))
    root = target / marker.read_text()
    if not root.is_dir():
        raise DataError(f"{zip_path.name} did not unpack to a folder")
    return root


def _collect(
    root: Path,
    csv_path: Path | None,
    skipped: list[Skipped],
    empty: list[str],
    tasks: Sequence[str] | None = None,
) -> tuple[str, list[_Candidate], list[str] | None]:
    """``(layout, candidates, task columns)``: every file that may be a labelled image, not yet
    opened, and the columns of a multi-task CSV (None for any other layout)."""
    if csv_path is not None:
        candidates, columns = _read_csv(csv_path, skipped, tasks)
        return "csv", candidates, columns
    split_dirs = _split_folders(root)
    if not split_dirs:
        return "class folders", _class_folders(root, None, skipped, empty), None
    candidates = []
    for split, folder in sorted(split_dirs.items(), key=lambda kv: SPLITS.index(kv[0])):
        candidates += _class_folders(folder, split, skipped, empty)
    for entry in sorted(root.iterdir()):
        if entry not in split_dirs.values() and not _is_system(entry):
            skipped.append(Skipped(str(entry), "not inside train/, val/ or test/"))
    return "split folders", candidates, None


def _check_all(
    candidates: list[_Candidate],
    max_pixels: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
    skipped: list[Skipped],
    looker: Looker | None = None,
) -> list[_Checked]:
    """Decode every picture the memo does not know once (in worker processes when there are
    many: :func:`studio.data.facts.facts_of_many`); what cannot be used is skipped, by name."""
    checked: list[_Checked] = []
    paths = [c.path for c in candidates]
    found = facts_of_many(paths, max_pixels, workers, progress, looker)
    for candidate, facts in zip(candidates, found):
        if isinstance(facts, str):
            skipped.append(Skipped(str(candidate.path), facts))
        else:
            checked.append(_Checked(candidate, facts))
    return checked


def _choose_splits(
    checked: list[_Checked],
    duplicate_groups: list[list[int]],
    multilabel: bool,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[str]:
    """The split of every image: as the folders or the CSV say, with a missing val or test
    carved out of train here, a whole group of duplicates at a time (so never leaking)."""
    splits_of = [c.candidate.split or "train" for c in checked]
    want = {"val", "test"} - set(splits_of)
    if not want:
        return splits_of
    train_idx = [i for i, split in enumerate(splits_of) if split == "train"]
    position = {i: pos for pos, i in enumerate(train_idx)}
    links = []
    for group in duplicate_groups:
        members = [position[i] for i in group if i in position]
        links += [(members[0], other) for other in members[1:]]
    groups = [[train_idx[p] for p in g] for g in _connected_groups(len(train_idx), links)]
    if multilabel:
        keys = ["all"] * len(groups)  # a random split: label combinations are too sparse
    else:
        keys = [";".join(checked[g[0]].candidate.labels) for g in groups]
    assignment = _assign_splits(
        groups,
        keys,
        val_fraction if "val" in want else 0.0,
        test_fraction if "test" in want else 0.0,
        seed,
        want,
    )
    return [assignment.get(i, split) for i, split in enumerate(splits_of)]


def _warnings(report: DataReport) -> list[str]:
    """Plain-words warnings about problems that will not stop training but hurt its result."""
    out = []
    per_class = report.per_class()
    few = [name for name, n in per_class.items() if n < 10]
    if few:
        out.append(
            f"few images in {', '.join(few)} (under 10): results will be unreliable; "
            "aim for at least 20 per class"
        )
    # Balance is a matter within one task (a picture has a material and a colour).
    groups = [[flat_name(t["name"], v) for v in t["labels"]] for t in report.tasks or []]
    for group in groups or [list(per_class)]:
        present = {k: per_class[k] for k in group if per_class.get(k)}
        if present and max(present.values()) >= 3 * min(present.values()):
            big, small = max(present, key=present.get), min(present, key=present.get)
            out.append(
                f"classes are unbalanced: {big} has {present[big]} images but {small} only "
                f"{present[small]}; the model may favour {big}"
            )
    if report.empty_classes:
        out.append(f"left out empty class folder(s): {', '.join(report.empty_classes)}")
    if report.leakage:
        out.append(
            f"{len(report.leakage)} image(s) appear in two splits (train, val, test): held-out "
            "accuracy will look better than it really is"
        )
    if report.conflicting_labels:
        out.append(f"{len(report.conflicting_labels)} picture(s) appear under different labels")
    big = max((len(g) for g in report.near_duplicates), default=0)
    if big > LARGE_GROUP:
        out.append(
            f"{big} pictures look like copies of one another and were kept in one split: if "
            "they are different pictures of the same thing (a burst of photos), that is right; "
            "if not, look at the near-duplicate groups in the report"
        )
    if report.total and min(report.min_size) < 32:
        out.append(
            f"some images are tiny ({report.min_size[0]}x{report.min_size[1]}); "
            "they will be enlarged and look blurry to the model"
        )
    if "val" not in report.counts:
        out.append("no validation images: early stopping and the best-model choice are disabled")
    return out
