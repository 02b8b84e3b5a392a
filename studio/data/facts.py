"""What one decode of a picture tells the data report, remembered per file.

The report needs each picture's size, its SHA-1 (exact duplicates), two difference hashes and a
16x16 grey thumbnail (near duplicates). Computing them means decoding the picture, and pictures
are decoded on upload (to refuse what is not a picture) and again every time the dataset is
loaded: the app reloads it after each added class or picture, and training checks it once more.
So the facts are kept here, keyed by the file's identity (path, size, modification time, and the
pixel limit it was checked under): the upload's decode is the report's too, and a reload
decodes only pictures it has not seen. A file changed in place has a new size or time and is
decoded again. The memo is bounded (least recently used entries go first) and shared by the
threads that load datasets.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
from PIL import Image

from .images import DEFAULT_MAX_PIXELS, ImageProblem, open_reduced

__all__ = [
    "PictureFacts",
    "FileMemo",
    "FactsMemo",
    "MEMO",
    "facts_of",
    "facts_of_many",
    "decode",
    "usable_facts",
    "remember_facts",
]


@dataclass(frozen=True)
class PictureFacts:
    """What the data report needs from one decoded picture."""

    width: int
    height: int
    sha1: str
    dhash: int  # 64 bits
    fine_dhash: int  # 256 bits
    thumb: bytes  # 16x16 grey levels: the pixel-level check of a near-duplicate candidate

    @classmethod
    def of(cls, img: Image.Image, data: bytes, size: tuple[int, int] | None = None) -> PictureFacts:
        """The facts of a decoded picture ``img`` whose file holds ``data`` (``size``: the
        picture's own size when ``img`` was decoded smaller)."""
        dhash, fine = (_hash_bits(imagehash.dhash(img, hash_size=n)) for n in (8, 16))
        thumb = img.convert("L").resize((16, 16), Image.Resampling.BOX).tobytes()
        width, height = size or img.size
        return cls(width, height, hashlib.sha1(data).hexdigest(), dhash, fine, thumb)


def _hash_bits(image_hash: imagehash.ImageHash) -> int:
    return int("".join("1" if b else "0" for b in image_hash.hash.flatten()), 2)


class FileMemo:
    """Values by file identity (path, size, modification time, and whatever else the caller
    keys on), bounded: least recently used first out; shared by threads. A file changed in
    place has a new size or time, so its old value is never returned."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(path: str | Path, *extra) -> tuple | None:
        """The file as it is now, with ``extra``; None when it cannot be read."""
        path = Path(path)
        try:
            st = path.stat()
        except OSError:
            return None
        return (str(path.resolve()), st.st_size, st.st_mtime_ns, *extra)

    def get(self, key: tuple | None):
        with self._lock:
            if key is None or key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: tuple | None, value) -> None:
        if key is None:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class FactsMemo(FileMemo):
    """Facts (or the reason a file is not a usable picture) by file identity and the pixel
    limit it was checked under, bounded."""

    def __init__(self, max_entries: int = 200_000):
        super().__init__(max_entries)
        self.decoded = 0  # pictures decoded through the memo: what a test counts

    def get(self, path: Path, max_pixels: int) -> PictureFacts | str | None:  # type: ignore[override]
        return super().get(self.key(path, max_pixels))

    def put(  # type: ignore[override]
        self, path: Path, max_pixels: int, value: PictureFacts | str, decoded: bool = False
    ) -> None:
        """Keep ``value`` for the file as it is now (``decoded``: it was decoded for this)."""
        key = self.key(path, max_pixels)
        if key is not None and decoded:
            with self._lock:
                self.decoded += 1
        super().put(key, value)


MEMO = FactsMemo()


def facts_of(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> PictureFacts:
    """The facts of the picture at ``path``, decoding it only if this file (as it is now) has
    not been seen. Raises :class:`~studio.data.images.ImageProblem` for a file that is not a
    usable picture (remembered too: a broken file is not decoded again either)."""
    path = Path(path)
    known = MEMO.get(path, max_pixels)
    if known is None:
        known = decode(path, max_pixels)
        MEMO.put(path, max_pixels, known, decoded=True)
    if isinstance(known, str):
        raise ImageProblem(known)
    return known


# The smallest side a JPEG is decoded at for its facts (its 17x16 hash and 16x16 thumbnail).
FACTS_PIXELS = 128


def decode(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> PictureFacts | str:
    """One picture's facts, or why it cannot be used, without the memo (what a worker process
    does; the process that asked keeps the answer)."""
    try:
        img, size = open_reduced(path, max_pixels, at_least=FACTS_PIXELS)
    except ImageProblem as exc:
        return str(exc)
    return PictureFacts.of(img, Path(path).read_bytes(), size)


# Below this many pictures to decode, threads: starting worker processes costs about a second.
PROCESSES_FROM = 1000


def facts_of_many(
    paths: Sequence[str | Path],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[PictureFacts | str]:
    """:func:`facts_of` for each path (a picture that cannot be used gives the reason as a
    string in its place), calling ``progress(done, total)`` as they come.

    Pictures the memo knows cost nothing. The others are decoded in worker processes, one a
    core, when there are :data:`PROCESSES_FROM` or more of them: decoding, hashing and
    thumbnailing a small picture is mostly Python and numpy work under the GIL, so threads
    share one core (measured in ``benchmarks/bench_photos.py``); fewer go to ``workers``
    threads, which overlap file reads and PIL's GIL-free decoding without the start-up cost."""
    paths = [Path(p) for p in paths]
    out: list[PictureFacts | str | None] = [MEMO.get(p, max_pixels) for p in paths]
    todo = [i for i, known in enumerate(out) if known is None]
    done, total = len(paths) - len(todo), len(paths)
    if progress is not None and done:
        progress(done, total)
    for i, value in zip(todo, _decoded([paths[i] for i in todo], max_pixels, workers)):
        MEMO.put(paths[i], max_pixels, value, decoded=True)
        out[i] = value
        done += 1
        if progress is not None:
            progress(done, total)
    return out  # type: ignore[return-value] - every None was filled in


def _decoded(paths: list[Path], max_pixels: int, workers: int) -> Iterator[PictureFacts | str]:
    """:func:`decode` of each path, in order, in processes or threads (see above)."""
    if not paths:  # all known (a copy of checked pictures): no pool to start
        return
    cores = min(_cores(), 8)
    if len(paths) < PROCESSES_FROM or cores < 2:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            yield from pool.map(decode, paths, itertools.repeat(max_pixels))
        return
    # spawn, not fork: the app and training hold threads (and torch) that a fork would copy.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(cores, mp_context=context, initializer=_quiet_worker)
    try:
        yield from pool.map(decode, paths, itertools.repeat(max_pixels), chunksize=32)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C or a stop: do not finish
        raise
    pool.shutdown()


def _cores() -> int:
    """The processor cores this process may use (its affinity, where the system tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _quiet_worker() -> None:
    """A worker ignores Ctrl-C: the process that started it stops it (no traceback each)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def usable_facts(paths: Sequence[str]) -> tuple[list[str], list[PictureFacts]]:
    """The paths among ``paths`` that are usable pictures, and their facts."""
    pairs = [(p, f) for p, f in zip(paths, facts_of_many(paths)) if isinstance(f, PictureFacts)]
    return [p for p, _ in pairs], [f for _, f in pairs]


def remember_facts(
    path: str | Path, facts: PictureFacts, max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """Keep ``facts`` for the picture just written to ``path`` (a copy of a file whose facts
    are known: an upload checked before it was copied in)."""
    MEMO.put(Path(path), max_pixels, facts)
