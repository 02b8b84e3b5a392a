"""A person's own folder of classes, pictures and runs: what the app edits, on disk.

Each browser gets one workspace (``<base>/<id>/``) with two picture sets side by side, the
person's own (``data/<class>/``) and a copy of the example (``example/<class>/``), one of them
active, and ``runs/``. Loading the example never touches the person's own pictures, so the runs
made on them keep working. Everything the Data tab does (add pictures to a class, import a zip, rename, delete,
load the example) is a method here, so it is tested without a browser and usable from Python.
Uploaded files are decoded before they are kept (nothing is ever unpickled or executed), names
are cleaned so no upload can write outside the workspace, and every refused file is reported.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .data.dataset import Dataset, load_dataset
from .data.facts import facts_of_many, remember_facts
from .data.images import is_image_name
from .data.safezip import extract_zip
from .data.table import TABLE, has_table, merge_table
from .errors import DataError, StudioError
from .runs import list_runs, write_atomic

__all__ = ["Workspace", "AddReport", "clean_class_name"]

# Datasets loaded recently, by (data folder, seed): (file fingerprint, Dataset).
_LOADED: dict[tuple[str, int], tuple[tuple, Dataset]] = {}
_LOADED_MAX = 16
_ID = re.compile(r"^[a-f0-9]{8,32}$")
# The picture sets a workspace holds: key -> (folder, what the app calls it).
PICTURE_SETS = {
    "mine": ("data", "Your pictures"),
    "example": ("example", "The example"),
    # Pictures labelled by a table (labels.csv, one column per task): studio.data.table.
    "table": ("table", "A table of labels (several tasks)"),
}
TABLE_SET = "table"
_TABLE_ONLY = (
    "this picture set is labelled by its table (labels.csv), not by class folders: upload a "
    "zip holding the pictures and a labels.csv to add to it"
)
_ACTIVE = "active-pictures"
NEW_PICTURES = "new-pictures"  # the Domain tab's pictures to compare (Workspace.new_dir)
_CLASS_NAME = re.compile(r"^[\w][\w \-.]{0,39}$", re.UNICODE)


def clean_class_name(name: str) -> str:
    """A class name that is safe as a folder name, or :class:`StudioError` saying why not."""
    name = " ".join(str(name or "").split())
    if not name:
        raise StudioError("a class needs a name")
    if not _CLASS_NAME.match(name) or name in (".", ".."):
        raise StudioError(
            f"'{name}' cannot be a class name: use up to 40 letters, digits, spaces, - _ or ."
        )
    return name


@dataclass
class AddReport:
    """What happened to uploaded files: how many were kept, which were refused and why."""

    added: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    def message(self) -> str:
        text = f"added {self.added} picture(s)"
        if self.classes:
            text += f" to {', '.join(self.classes)}"
        if self.skipped:
            names = "; ".join(f"{n}: {why}" for n, why in self.skipped[:10])
            more = f" (and {len(self.skipped) - 10} more)" if len(self.skipped) > 10 else ""
            text += f". Skipped {len(self.skipped)}: {names}{more}"
        return text


class Workspace:
    """One person's classes, pictures and runs under ``base/<id>``."""

    def __init__(self, base: str | Path, workspace_id: str | None = None):
        if workspace_id is None or not _ID.match(workspace_id):
            workspace_id = secrets.token_hex(8)
        self.id = workspace_id
        self.root = Path(base) / workspace_id
        self.runs_dir = self.root / "runs"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ picture sets

    @property
    def active(self) -> str:
        """Which picture set the Data tab edits and training uses (a key of PICTURE_SETS)."""
        marker = self.root / _ACTIVE
        key = marker.read_text().strip() if marker.is_file() else "mine"
        return key if key in PICTURE_SETS else "mine"

    @property
    def data_dir(self) -> Path:
        return self.root / PICTURE_SETS[self.active][0]

    def use(self, key: str) -> None:
        """Work on another picture set; the other keeps its pictures and runs."""
        if key not in PICTURE_SETS:
            raise StudioError(f"there is no picture set called '{key}'")
        (self.root / PICTURE_SETS[key][0]).mkdir(parents=True, exist_ok=True)
        (self.root / _ACTIVE).write_text(key)

    def picture_sets(self) -> list[tuple[str, str, int]]:
        """(key, name, number of pictures) for each set, for choosing between them."""
        rows = []
        for key, (folder, name) in PICTURE_SETS.items():
            path = self.root / folder
            count = (
                sum(1 for f in path.rglob("*") if f.is_file() and is_image_name(f))
                if path.is_dir()
                else 0
            )
            if key == TABLE_SET and not count and self.active != key:
                continue  # offered once it holds a table: most people never need it
            rows.append((key, name, count))
        return rows

    # ------------------------------------------------------------------ classes

    @property
    def is_table(self) -> bool:
        """Whether the active set is labelled by a table (several tasks), not class folders."""
        return self.active == TABLE_SET

    def classes(self) -> list[str]:
        if self.is_table:
            return []  # its classes are the table's values: see dataset()
        return sorted(p.name for p in self.data_dir.iterdir() if p.is_dir())

    def counts(self) -> dict[str, int]:
        if self.is_table:
            pictures = [f for f in self.data_dir.rglob("*") if f.is_file() and is_image_name(f)]
            return {"pictures": len(pictures)} if has_table(self.data_dir) else {}
        return {
            c: sum(1 for f in (self.data_dir / c).iterdir() if f.is_file()) for c in self.classes()
        }

    def _class_dir(self, name: str, must_exist: bool = True) -> Path:
        if self.is_table:
            raise StudioError(_TABLE_ONLY)
        name = clean_class_name(name)
        path = self.data_dir / name
        if must_exist and not path.is_dir():
            raise StudioError(f"there is no class called '{name}'")
        return path

    def add_class(self, name: str) -> str:
        path = self._class_dir(name, must_exist=False)
        path.mkdir(exist_ok=True)
        return path.name

    def rename_class(self, old: str, new: str) -> str:
        source = self._class_dir(old)
        target = self._class_dir(new, must_exist=False)
        if target.exists() and target != source:
            raise StudioError(f"a class called '{target.name}' already exists")
        source.rename(target)
        return target.name

    def delete_class(self, name: str) -> None:
        shutil.rmtree(self._class_dir(name))

    def images(self, name: str) -> list[Path]:
        """The pictures of a class (of a table set: those carrying the value ``task: value``)."""
        if self.is_table:
            dataset = self.dataset()
            if name not in dataset.classes:
                return []
            index = dataset.classes.index(name)
            found = [s.path for part in dataset.splits.values() for s in part if index in s.labels]
            return sorted(Path(p) for p in found)
        return sorted(f for f in self._class_dir(name).iterdir() if f.is_file())

    # ------------------------------------------------------------------ a table of labels

    def import_table(
        self, folder: str | Path, progress: Callable[[int, int], None] | None = None
    ) -> AddReport:
        """Add the pictures a folder's ``labels.csv`` lists (and its rows) to the table set,
        which becomes the set worked on (studio.data.table.merge_table; ``progress`` while
        its pictures are checked)."""
        self.use(TABLE_SET)
        added, skipped = merge_table(Path(folder), self.data_dir, progress)
        report = AddReport(added=added, skipped=skipped)
        self._remember_refused(skipped, TABLE)
        return report

    def load_multitask_example(self) -> AddReport:
        """Work on the multi-task example (labels.csv: path,material,colour) in the table set;
        the other sets and their runs are kept."""
        from .data.example import multitask_example

        return self.import_table(multitask_example())

    def empty_table(self) -> int:
        """Remove the table set's table and pictures (the app asks first); how many files."""
        folder = self.root / PICTURE_SETS[TABLE_SET][0]
        files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        return len(files)

    # ------------------------------------------------------------------ adding pictures

    def add_images(self, name: str, files: Iterable[str | Path]) -> AddReport:
        """Copy pictures into class ``name`` (made if needed); undecodable files are refused,
        and remembered with their reason for the data report (see :meth:`refused`)."""
        report = self._add_images(name, files)
        self._remember_refused(report.skipped, report.classes[0])
        return report

    def refused(self, key: str | None = None) -> list[tuple[str, str]]:
        """Uploads refused for the active picture set (or the set ``key``: ``NEW_PICTURES``
        for the new pictures), ``(class/file, reason)``, newest last: a refused file never
        reaches the data folder, so the report would not name it."""
        path = self.root / f"refused-{key or self.active}.json"
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        return [(str(r[0]), str(r[1])) for r in rows if isinstance(r, list) and len(r) == 2]

    def _remember_refused(
        self, skipped: list[tuple[str, str]], where: str, key: str | None = None
    ) -> None:
        if not skipped:
            return
        key = key or self.active
        rows = self.refused(key) + [(f"{where}/{name}", why) for name, why in skipped]
        write_atomic(self.root / f"refused-{key}.json", json.dumps(rows[-500:]).encode())

    def _add_images(self, name: str, files: Iterable[str | Path]) -> AddReport:
        folder = self._class_dir(name, must_exist=False)
        folder.mkdir(exist_ok=True)
        report = AddReport(classes=[folder.name])
        _copy_pictures(folder, files, report)
        return report

    # ------------------------------------------------------------------ new pictures

    @property
    def new_dir(self) -> Path:
        """Pictures to compare with a run's training pictures (the Domain tab), kept apart
        from every picture set: loose pictures are unlabelled, class folders are labels."""
        return self.root / NEW_PICTURES

    def add_new_pictures(self, files: Iterable[str | Path], label: str | None = None) -> AddReport:
        """Add pictures (labelled ``label``, or unlabelled) or zips (their class folders keep
        their labels, loose pictures in them take ``label``) to the new pictures; each refusal
        is named, and remembered for the new pictures' report."""
        top = self._new_folder(label)
        report = AddReport(classes=[top.name] if label else [])
        pictures = []
        for path in map(Path, files):
            if path.suffix.lower() != ".zip":
                pictures.append(path)
                continue
            with tempfile.TemporaryDirectory(dir=self.root) as tmp:
                content = extract_zip(path, Path(tmp) / "zip")
                _check_pictures_in(content)
                for item in sorted(content.rglob("*")):
                    if not item.is_file() or item.is_symlink() or "__MACOSX" in item.parts:
                        continue
                    rel = item.relative_to(content).parts
                    folder = top
                    if len(rel) == 2:  # a class folder: its name is the label
                        folder = self._new_folder(rel[0])
                        if folder.name not in report.classes:
                            report.classes.append(folder.name)
                    _copy_pictures(folder, [item], report)
        _copy_pictures(top, pictures, report)
        for name in list(report.classes):  # a label whose every picture was refused
            if not any((self.new_dir / name).iterdir()):
                (self.new_dir / name).rmdir()
                report.classes.remove(name)
        self._remember_refused(report.skipped, "new pictures", NEW_PICTURES)
        return report

    def add_new_pil(self, image, label: str | None = None) -> Path:
        """Save a webcam frame among the new pictures (labelled ``label``, or unlabelled)."""
        return _save_pil(self._new_folder(label), image, "webcam")

    def _new_folder(self, label: str | None) -> Path:
        """Where new pictures labelled ``label`` go (the top folder for unlabelled ones)."""
        folder = self.new_dir / clean_class_name(label) if label else self.new_dir
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def new_pictures_report(self):
        """The new pictures' data report (:func:`studio.domain.pictures.describe_pictures`)
        against the active picture set, uploads refused on the way included."""
        from .domain.pictures import PictureSet, describe_pictures, load_pictures

        if self.new_pictures()[0]:
            pictures = load_pictures(self.new_dir, "new pictures")
        else:
            pictures = PictureSet(self.new_dir, [], [])
        pictures.skipped[:0] = self.refused(NEW_PICTURES)
        training = [str(f) for c in self.classes() for f in self.images(c)]
        return describe_pictures(pictures, training, self.classes())

    def remove_new_pictures(self) -> int:
        """Delete the new pictures (the Domain tab asks first); returns how many there were."""
        count = self.new_pictures()[0]
        shutil.rmtree(self.new_dir, ignore_errors=True)
        (self.root / f"refused-{NEW_PICTURES}.json").unlink(missing_ok=True)
        return count

    def new_pictures(self) -> tuple[int, list[str]]:
        """(how many new pictures, their labels if they are labelled)."""
        if not self.new_dir.is_dir():
            return 0, []
        files = [f for f in self.new_dir.rglob("*") if f.is_file()]
        return len(files), sorted(p.name for p in self.new_dir.iterdir() if p.is_dir())

    def add_pil(self, name: str, image, prefix: str = "webcam") -> Path:
        """Save an in-memory picture (a webcam frame) into class ``name`` as JPEG."""
        folder = self._class_dir(name, must_exist=False)
        folder.mkdir(exist_ok=True)
        return _save_pil(folder, image, prefix)

    def import_zip(
        self, zip_path: str | Path, progress: Callable[[int, int], None] | None = None
    ) -> AddReport:
        """Add the class folders inside a zip (extracted safely) to this workspace, calling
        ``progress(checked, pictures)`` while its pictures are checked (the long part)."""
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            content = extract_zip(zip_path, Path(tmp) / "zip")
            if has_table(content):  # pictures with a table of labels: the table set
                return self.import_table(content, progress)
            if content.name != "zip" and not any(p.is_dir() for p in content.iterdir()):
                # extract_zip unwraps a lone top folder; one holding only pictures is itself a
                # class (a zip of one class's folder), not a wrapper around class folders.
                content = content.parent
            # Accept train/val/test wrappers too: their class folders are merged.
            splits = [
                p
                for p in content.iterdir()
                if p.is_dir()
                and p.name.lower()
                in ("train", "training", "val", "valid", "validation", "test", "testing")
            ]
            roots = splits or [content]
            _check_pictures_in(content, progress)
            total = AddReport()
            for root in roots:
                for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                    if folder.name.startswith(("__MACOSX", ".")):
                        continue
                    try:
                        clean_class_name(folder.name)
                    except StudioError as exc:
                        total.skipped.append((folder.name + "/", str(exc)))
                        continue
                    files = [f for f in folder.rglob("*") if f.is_file() and not f.is_symlink()]
                    part = self._add_images(folder.name, files)
                    total.added += part.added
                    total.skipped += part.skipped
                    if folder.name not in total.classes:
                        total.classes.append(folder.name)
                for loose in sorted(p for p in root.iterdir() if p.is_file()):
                    total.skipped.append((loose.name, "not inside a class folder"))
            self._remember_refused(total.skipped, Path(str(zip_path)).name)
            if not total.classes:
                raise DataError(
                    "the zip holds no class folders: put each class's pictures in a folder "
                    "named after the class, then zip those folders"
                )
            return total

    def load_example(self) -> AddReport:
        """Work on the example pictures, beside (never instead of) the person's own.

        The example lives in its own picture set; loading it again puts back any example
        picture that was deleted from that set and keeps what was added to it. The person's
        own pictures, and the runs made on them, are not touched.
        """
        from .data.example import example_dataset

        self.use("example")
        report = AddReport()
        for folder in sorted(p for p in example_dataset().iterdir() if p.is_dir()):
            have = self.data_dir / folder.name
            missing = [f for f in sorted(folder.glob("*.jpg")) if not (have / f.name).exists()]
            part = self._add_images(folder.name, missing)
            report.added += part.added
            report.classes.append(folder.name)
        return report

    # ------------------------------------------------------------------ data and runs

    def dataset(self, seed: int = 0) -> Dataset:
        """The workspace's pictures as a :class:`~studio.data.dataset.Dataset` (with its report).

        Loading decodes every picture, and the app asks after every click, so the result is
        reused until a file is added, removed or changed (names, sizes and times are compared).
        """
        if not any(self.counts().values()):
            raise DataError("there are no pictures yet: add some to at least two classes")
        key = (str(self.data_dir), seed)
        fingerprint = self._fingerprint()
        cached = _LOADED.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        dataset = load_dataset(self.data_dir, seed=seed)
        _LOADED[key] = (fingerprint, dataset)
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        return dataset

    def _fingerprint(self) -> tuple:
        entries = []
        for path in sorted(self.data_dir.rglob("*")):
            if path.is_file():
                stat = path.stat()
                entries.append(
                    (str(path.relative_to(self.data_dir)), stat.st_size, stat.st_mtime_ns)
                )
        return tuple(entries)

    def runs(self) -> list[Path]:
        return list_runs(self.runs_dir)

    def new_run_dir(self, backbone: str = "run", classes: Iterable[str] = ()) -> Path:
        """A new run's folder, named for when, on which pictures and classes, and the backbone:
        ``20261123-2245-example-brick-grass-gravel-tf_efficientnet_lite0``."""
        names = "-".join(classes)
        names = names if len(names) <= 40 else names[:37] + "..."
        label = "-".join(p for p in (self.active if names else "", names, backbone) if p)
        label = re.sub(r"[^\w\-.]", "_", label)[:100].strip(".") or "run"
        path = self.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}"
        n = 1
        while path.exists():
            n += 1
            path = path.with_name(f"{path.name.rsplit('~', 1)[0]}~{n}")
        return path

    def resolve_run(self, name: str) -> Path:
        """A run folder of this workspace by name; nothing outside it is ever returned."""
        path = (self.runs_dir / Path(str(name)).name).resolve()
        if not path.is_dir() or path.parent != self.runs_dir.resolve():
            raise StudioError(f"no run called '{name}' in this workspace")
        return path


def _save_pil(folder: Path, image, prefix: str) -> Path:
    """An in-memory picture (a webcam frame) saved as a JPEG under a fresh name."""
    target = folder / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}.jpg"
    image.convert("RGB").save(target, quality=92)
    return target


def _check_pictures_in(folder: Path, progress: Callable[[int, int], None] | None = None) -> None:
    """Check every picture under an extracted zip's ``folder`` in one pass (in worker processes
    when there are many, with ``progress``), so that copying them in finds them checked."""
    facts_of_many([f for f in folder.rglob("*") if f.is_file() and is_image_name(f)],
                  progress=progress)  # fmt: skip


def _copy_pictures(folder: Path, files: Iterable[str | Path], report: AddReport) -> None:
    """Copy the pictures among ``files`` into ``folder`` under fresh names, counting them in
    ``report`` and naming each refused file with its reason. Each is decoded once to be
    checked (in worker processes when there are many), and what that decode found is the data
    report's too."""
    pictures = []
    for source in map(Path, files):
        if is_image_name(source):
            pictures.append(source)
        else:
            report.skipped.append(
                (source.name, f"not a picture file ({source.suffix or 'no extension'})")
            )
    for source, facts in zip(pictures, facts_of_many(pictures)):
        if isinstance(facts, str):
            report.skipped.append((source.name, facts))
            continue
        stem = re.sub(r"[^\w\-.]", "_", source.stem)[:60] or "image"
        target = folder / f"{stem}{source.suffix.lower()}"
        n = 1
        while target.exists():
            n += 1
            target = folder / f"{stem}-{n}{source.suffix.lower()}"
        shutil.copyfile(source, target)
        remember_facts(target, facts)
        report.added += 1
