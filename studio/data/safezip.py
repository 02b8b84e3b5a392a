"""Extract an uploaded ``.zip`` without trusting it.

A zip from the internet can hold names like ``../../.bashrc`` or ``/etc/passwd``, symbolic links
that point outside the folder, or a few kilobytes that inflate to terabytes. :func:`extract_zip`
refuses all of these before writing anything, and enforces the limits again while writing, since
a zip's own size fields can lie.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError

# What Python's zipfile unpacks: stored, deflate, bzip2, lzma (not PPMd, not AES, ...).
_READABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}

__all__ = ["ZipLimits", "extract_zip"]


@dataclass(frozen=True)
class ZipLimits:
    """Upper bounds on what one archive may unpack to."""

    max_files: int = 50_000
    max_total_bytes: int = 4 * 1024**3
    max_file_bytes: int = 256 * 1024**2
    max_ratio: float = 200.0  # uncompressed/compressed, per file; photos compress far less


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a member may be written to, or None when it would escape the folder."""
    name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    if any(part == ".." for part in path.parts):
        return None
    parts = [p for p in path.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def extract_zip(zip_path: str | Path, dest: str | Path, limits: ZipLimits = ZipLimits()) -> Path:
    """Extract ``zip_path`` into ``dest`` after checking every member.

    Args:
        zip_path: The archive.
        dest: Folder to create; must not exist or be empty.
        limits: Size and count limits.

    Returns:
        ``dest``, or its single top-level folder when the archive wraps everything in one.

    Raises:
        DataError: The archive is damaged, empty, or breaks a rule; nothing is left behind.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{zip_path.name} is not a readable zip file ({exc})") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise DataError(f"{zip_path.name} is empty: it contains no files")
        if len(members) > limits.max_files:
            raise DataError(
                f"{zip_path.name} holds {len(members):,} files; the limit is {limits.max_files:,}"
            )
        plan = _plan(zip_path.name, members, limits)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            _write(archive, plan, dest, zip_path.name, limits.max_total_bytes)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise DataError(f"{zip_path.name} is damaged ({exc})") from None
        except DataError:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    entries = [p for p in dest.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _member_problem(name: str, member: zipfile.ZipInfo, limits: ZipLimits) -> str | None:
    """Why one member may not be unpacked (before a byte is written), or None."""
    if stat.S_ISLNK(member.external_attr >> 16):
        return f"{name} contains a symbolic link ({member.filename})"
    if _safe_member_path(member.filename) is None:
        return (
            f"{name} contains an unsafe path ({member.filename!r}) that points outside the folder"
        )
    if member.flag_bits & 0x1:
        return (
            f"{name} is protected by a password ({member.filename}): "
            "zip the folders again without one"
        )
    if member.compress_type not in _READABLE:
        return (
            f"{name} uses a compression method this computer cannot unpack "
            f"({member.filename}): zip the folders again with the usual (deflate) method"
        )
    if member.file_size > limits.max_file_bytes:
        return f"{member.filename} in {name} is too large to extract"
    if member.compress_size and member.file_size / member.compress_size > limits.max_ratio:
        return f"{member.filename} in {name} inflates suspiciously (zip bomb?)"
    return None


def _plan(name: str, members: list[zipfile.ZipInfo], limits: ZipLimits) -> list:
    """Every member with its safe relative path; the first rule broken stops it all."""
    total, plan = 0, []
    for member in members:
        if problem := _member_problem(name, member, limits):
            raise DataError(problem)
        total += member.file_size
        if total > limits.max_total_bytes:
            raise DataError(f"{name} unpacks to more than the size limit")
        plan.append((member, _safe_member_path(member.filename)))
    return plan


def _write(archive: zipfile.ZipFile, plan: list, dest: Path, name: str, max_bytes: int) -> None:
    """Unpack the plan, counting the bytes really written (a header can lie about sizes)."""
    written = 0
    for member, rel in plan:
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise DataError(f"{name} unpacks to more than the size limit")
                out.write(chunk)
