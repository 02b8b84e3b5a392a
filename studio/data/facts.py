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

The same decode can feed a model too (a :class:`Looker`: training's pretrained backbone,
:mod:`studio.training.feature_pass`), so a command that checks pictures and then trains on them
decodes each picture once: a JPEG is decoded for its facts at the size a model's preparation
needs (:data:`FACTS_DECODE`), and the facts are computed on a box-reduced copy of it.
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
from typing import Protocol

import imagehash
from PIL import Image

from .images import DEFAULT_MAX_PIXELS, ImageProblem, open_reduced

__all__ = [
    "PictureFacts",
    "Looker",
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


# A JPEG is decoded for its facts keeping at least this many pixels a side: what the default
# backbone's preparation needs (EfficientNet-Lite0 shrinks the shorter side to 256), so the
# decode that checks a picture can also feed that model (a Looker). A 3000x2000 JPEG decodes
# at 1/4 in 8.0 ms here, at 1/8 in 6.9 ms: the entropy decoding is most of the work either way.
FACTS_DECODE = 256
# The facts are computed on a copy box-reduced by a whole factor to no fewer than this many
# pixels a side (hashing a 750x500 decode costs 3.6 ms, its 250x166 copy 1.4 ms); smaller
# pictures are used as they are.
FACTS_PIXELS = 128


def decode(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> PictureFacts | str:
    """One picture's facts, or why it cannot be used, without the memo (what a worker process
    does; the process that asked keeps the answer)."""
    return _decode_one(Path(path), max_pixels)[0]


def _decode_one(path: Path, max_pixels: int) -> tuple[PictureFacts | str, Image.Image | None,
                                                     tuple[int, int] | None]:  # fmt: skip
    """``(facts or the reason, the decoded picture, its upright size as stored)``."""
    try:
        img, size = open_reduced(path, max_pixels, at_least=FACTS_DECODE)
    except ImageProblem as exc:
        return str(exc), None, None
    factor = min(img.size) // FACTS_PIXELS
    small = img.reduce(factor) if factor >= 2 else img
    return PictureFacts.of(small, path.read_bytes(), size), img, size


class Looker(Protocol):
    """Something more to learn from each picture while it is decoded for its facts (a model's
    features), in the worker processes of :func:`facts_of_many`. Made in the calling process
    and sent to each worker once; a worker calls :meth:`start` before its first pictures."""

    processes: int  # the most worker processes (each may hold a model)

    def ready(self) -> None:
        """In the calling process, before the workers start (raise here what the user must
        mend: a worker's failure would end the pool without a reason)."""

    def start(self) -> None:
        """In a worker process, before its first pictures."""

    def look(self, decoded: list[tuple[Path, PictureFacts, Image.Image, tuple[int, int]] | None]
             ) -> list:  # fmt: skip
        """In a worker: one result (or None) per picture, given ``(path, facts, the decoded
        picture at FACTS_DECODE, its upright size as stored)`` or None (not a picture)."""

    def keep(self, facts: list[PictureFacts | str], seen: list) -> None:
        """In the calling process: what :meth:`look` found for these pictures."""


# Below this many pictures to decode, threads: starting worker processes costs about a second.
PROCESSES_FROM = 1000
CHUNK = 32  # pictures a worker process decodes (and a Looker sees) at a time


def facts_of_many(
    paths: Sequence[str | Path],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
    looker: Looker | None = None,
) -> list[PictureFacts | str]:
    """:func:`facts_of` for each path (a picture that cannot be used gives the reason as a
    string in its place), calling ``progress(done, total)`` as they come.

    Pictures the memo knows cost nothing. The others are decoded in worker processes, one a
    core, when there are :data:`PROCESSES_FROM` or more of them: decoding, hashing and
    thumbnailing a small picture is mostly Python and numpy work under the GIL, so threads
    share one core (measured in ``benchmarks/bench_photos.py``); fewer go to ``workers``
    threads, which overlap file reads and PIL's GIL-free decoding without the start-up cost.
    ``looker`` looks at each decoded picture in the worker processes (not in threads: it is
    left out below :data:`PROCESSES_FROM` pictures, where a second decode costs little)."""
    paths = [Path(p) for p in paths]
    out: list[PictureFacts | str | None] = [MEMO.get(p, max_pixels) for p in paths]
    todo = [i for i, known in enumerate(out) if known is None]
    done, total = len(paths) - len(todo), len(paths)
    if progress is not None and done:
        progress(done, total)
    chunks = _decoded([paths[i] for i in todo], max_pixels, workers, looker)
    for n, values in enumerate(chunks):
        for i, value in zip(todo[n * CHUNK : (n + 1) * CHUNK], values):
            MEMO.put(paths[i], max_pixels, value, decoded=True)
            out[i] = value
        done += len(values)
        if progress is not None:
            progress(done, total)
    return out  # type: ignore[return-value] - every None was filled in


def _decoded(paths: list[Path], max_pixels: int, workers: int, looker: Looker | None
             ) -> Iterator[list[PictureFacts | str]]:  # fmt: skip
    """:func:`decode` of each path, in order, a chunk of :data:`CHUNK` at a time, in processes
    or threads (see above); a looker's findings are handed to its ``keep`` chunk by chunk."""
    if not paths:  # all known (a copy of checked pictures): no pool to start
        return
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    cores = min(_cores(), 8)
    if len(paths) < PROCESSES_FROM or cores < 2:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            found = pool.map(decode, paths, itertools.repeat(max_pixels))
            for chunk in chunks:
                yield [next(found) for _ in chunk]
        return
    if looker is not None:
        looker.ready()
    # spawn, not fork: the app and training hold threads (and torch) that a fork would copy.
    context = multiprocessing.get_context("spawn")
    processes = min(cores, looker.processes) if looker is not None else cores
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                               initargs=(looker,))  # fmt: skip
    try:
        for found in pool.map(_decode_chunk, chunks, itertools.repeat(max_pixels)):
            facts = [value for value, _ in found]
            if looker is not None:
                looker.keep(facts, [seen for _, seen in found])
            yield facts
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C or a stop: do not finish
        raise
    pool.shutdown()


_LOOKER: Looker | None = None  # in a worker process: what looks at its decoded pictures


def _start_worker(looker: Looker | None) -> None:
    """A worker ignores Ctrl-C (the process that started it stops it: no traceback each) and
    gets its looker ready."""
    global _LOOKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _LOOKER = looker
    if looker is not None:
        looker.start()


def _decode_chunk(paths: list[Path], max_pixels: int) -> list[tuple[PictureFacts | str, object]]:
    """In a worker: each picture's facts (or why not), and what the looker saw in it."""
    decoded = [_decode_one(path, max_pixels) for path in paths]
    if _LOOKER is None:
        return [(facts, None) for facts, _, _ in decoded]
    seen = _LOOKER.look([(path, facts, img, size) if img is not None else None
                         for path, (facts, img, size) in zip(paths, decoded)])  # fmt: skip
    return [(facts, found) for (facts, _, _), found in zip(decoded, seen)]


def _cores() -> int:
    """The processor cores this process may use (its affinity, where the system tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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
