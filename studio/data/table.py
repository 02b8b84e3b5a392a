"""A picture set labelled by a table: ``labels.csv`` (one column per task) beside its pictures.

The app's class folders cannot say that a picture is *brick* and *red*; a table can. Importing
one (from a zip, or the multi-task example) copies each listed picture that decodes to the same
relative path in the set and merges the rows into the set's ``labels.csv``: a picture listed
again gets its new row, nothing else is removed. A table whose columns differ from the set's is
refused (mixing them would leave half the pictures without a value for some task); the set can
be emptied first, which the app asks about before doing it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from .facts import facts_of_many, remember_facts
from .images import is_image_name

__all__ = ["TABLE", "has_table", "merge_table", "table_columns"]

TABLE = "labels.csv"


def has_table(folder: Path) -> bool:
    return (folder / TABLE).is_file()


def _read(path: Path) -> tuple[list[str], list[dict]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [c for c in reader.fieldnames or [] if c], list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path.name} is not a readable UTF-8 CSV file ({exc})") from None


def table_columns(folder: Path) -> list[str]:
    """The columns of the set's table (none when it has no table)."""
    return _read(folder / TABLE)[0] if has_table(folder) else []


def _path_column(columns: list[str]) -> str:
    for name in columns:
        if name.strip().lower() in ("path", "file", "filename"):
            return name
    raise DataError(f"{TABLE} needs a 'path' column (found: {', '.join(columns) or 'nothing'})")


def merge_table(
    source: Path, target: Path, progress: Callable[[int, int], None] | None = None
) -> tuple[int, list[tuple[str, str]]]:
    """Copy the pictures ``source/labels.csv`` lists into ``target`` and merge its rows into
    ``target/labels.csv``; ``(pictures added, [(file, why it was refused)])``. The listed
    pictures are checked in one pass (:func:`studio.data.facts.facts_of_many`, calling
    ``progress(checked, pictures)``), whose facts the copies keep for the data report."""
    columns, rows = _read(source / TABLE)
    path_key = _path_column(columns)
    have_columns, have_rows = _read(target / TABLE) if has_table(target) else (columns, [])
    if have_columns != columns:
        raise DataError(
            f"the table here has the columns {', '.join(have_columns)}; this one has "
            f"{', '.join(columns)}: empty the table set first, or give it the same columns"
        )
    base, kept, refused = source.resolve(), {}, []
    listed = [(row, (row.get(path_key) or "").strip()) for row in rows]
    listed = [(row, relative, (base / relative).resolve()) for row, relative in listed]
    why_not = [_not_a_listed_picture(picture, base, relative) for _, relative, picture in listed]
    pictures = [picture for (_, _, picture), why in zip(listed, why_not) if why is None]
    found = dict(zip(pictures, facts_of_many(pictures, progress=progress)))
    for (row, relative, picture), why in zip(listed, why_not):
        facts = why or found[picture]
        if isinstance(facts, str):
            refused.append((relative or "(empty path)", facts))
            continue
        key = picture.relative_to(base).as_posix()
        destination = target / key
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(picture.read_bytes())
        remember_facts(destination, facts)  # the data report's decode, done now
        kept[key] = {**row, path_key: key}
    merged = {Path((r.get(path_key) or "").strip()).as_posix(): r for r in have_rows}
    merged.update(kept)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(merged.values())
    (target / TABLE).write_text(out.getvalue(), encoding="utf-8")
    return len(kept), refused


def _not_a_listed_picture(picture: Path, base: Path, relative: str) -> str | None:
    """Why a row's path cannot be taken, before any decoding (None: it names a picture file
    inside the table's folder)."""
    if not relative:
        return "the row has no path"
    if not picture.is_relative_to(base):
        return "the path points outside the table's folder"
    if not picture.is_file():
        return f"listed in {TABLE} but not in the zip"
    if not is_image_name(picture):
        return f"not a picture file ({picture.suffix or 'no extension'})"
    return None
