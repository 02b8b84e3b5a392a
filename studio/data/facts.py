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
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
from PIL import Image

from .images import DEFAULT_MAX_PIXELS, ImageProblem, open_rgb

__all__ = [
    "PictureFacts",
    "FactsMemo",
    "MEMO",
    "facts_of",
    "facts_of_many",
    "usable_facts",
    "remember",
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
    def of(cls, img: Image.Image, data: bytes) -> PictureFacts:
        """The facts of a decoded picture ``img`` whose file holds ``data``."""
        dhash, fine = (_hash_bits(imagehash.dhash(img, hash_size=n)) for n in (8, 16))
        thumb = img.convert("L").resize((16, 16), Image.Resampling.BOX).tobytes()
        return cls(img.width, img.height, hashlib.sha1(data).hexdigest(), dhash, fine, thumb)


def _hash_bits(image_hash: imagehash.ImageHash) -> int:
    return int("".join("1" if b else "0" for b in image_hash.hash.flatten()), 2)


class FactsMemo:
    """Facts (or the reason a file is not a usable picture) by file identity, bounded."""

    def __init__(self, max_entries: int = 200_000):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple, PictureFacts | str] = OrderedDict()
        self._lock = threading.Lock()
        self.decoded = 0  # pictures decoded through the memo: what a test counts

    @staticmethod
    def _key(path: Path, max_pixels: int) -> tuple | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (str(path.resolve()), st.st_size, st.st_mtime_ns, max_pixels)

    def get(self, path: Path, max_pixels: int) -> PictureFacts | str | None:
        key = self._key(path, max_pixels)
        with self._lock:
            if key is None or key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(
        self, path: Path, max_pixels: int, value: PictureFacts | str, decoded: bool = False
    ) -> None:
        """Keep ``value`` for the file as it is now (``decoded``: it was decoded for this)."""
        key = self._key(path, max_pixels)
        if key is None:
            return
        with self._lock:
            self.decoded += decoded
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


MEMO = FactsMemo()


def facts_of(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> PictureFacts:
    """The facts of the picture at ``path``, decoding it only if this file (as it is now) has
    not been seen. Raises :class:`~studio.data.images.ImageProblem` for a file that is not a
    usable picture (remembered too: a broken file is not decoded again either)."""
    path = Path(path)
    known = MEMO.get(path, max_pixels)
    if isinstance(known, PictureFacts):
        return known
    if isinstance(known, str):
        raise ImageProblem(known)
    try:
        img = open_rgb(path, max_pixels=max_pixels)
    except ImageProblem as exc:
        MEMO.put(path, max_pixels, str(exc), decoded=True)
        raise
    facts = PictureFacts.of(img, path.read_bytes())
    MEMO.put(path, max_pixels, facts, decoded=True)
    return facts


def facts_of_many(
    paths: Sequence[str | Path], max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 4
) -> list[PictureFacts | str]:
    """:func:`facts_of` for each path, in threads (file I/O and PIL's decoding release the GIL);
    a picture that cannot be used gives the reason as a string in its place."""

    def one(path):
        try:
            return facts_of(path, max_pixels)
        except ImageProblem as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, paths))


def usable_facts(paths: Sequence[str]) -> tuple[list[str], list[PictureFacts]]:
    """The paths among ``paths`` that are usable pictures, and their facts."""
    pairs = [(p, f) for p, f in zip(paths, facts_of_many(paths)) if isinstance(f, PictureFacts)]
    return [p for p, _ in pairs], [f for _, f in pairs]


def remember(path: str | Path, img: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Keep the facts of a picture just written to ``path`` from its decoded ``img`` (the
    upload's check decoded it already), so loading the dataset does not decode it again."""
    path = Path(path)
    MEMO.put(path, max_pixels, PictureFacts.of(img, path.read_bytes()))
