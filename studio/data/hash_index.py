"""Find every pair of 64-bit hashes within a few bits of each other without comparing all pairs.

Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012): cut each hash into ``r + 1``
disjoint chunks; two hashes that differ in at most ``r`` bits agree exactly on at least one
chunk (pigeonhole), so the candidates for a hash are the hashes sharing one of its chunks,
looked up in one table per chunk, and each candidate is then checked on all 64 bits. The
result is exactly the all-pairs result (a test compares them), from far fewer candidates:
50,000 random-looking hashes are 1.25 billion pairs, but under a million chunk matches. Real
photos of one kind are not random-looking (50,000 Fashion-MNIST garments share whole chunks),
and there :meth:`pair_blocks` compares every pair in blocks instead, which stays about a second
at that size and bounded in memory.

Written here rather than taken from a library: FAISS's ``IndexBinaryMultiHash`` does the same
for its own binary codes, but it is a large compiled dependency for ~40 lines of exact
dictionary look-ups over the hashes the studio already keeps as Python integers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["HashIndex"]

BITS = 64


class HashIndex:
    """64-bit hashes indexed for "which are within ``radius`` bits of this one?".

    >>> index = HashIndex([0b1011, 0b1010, 0xFFFF], radius=1)
    >>> sorted(index.near(0b1011))
    [0, 1]
    """

    def __init__(self, hashes: Sequence[int], radius: int):
        self.hashes = np.asarray([int(h) for h in hashes], dtype=np.uint64)
        self.radius = radius
        chunks = radius + 1
        edges = [round(k * BITS / chunks) for k in range(chunks + 1)]
        self._spans = [(lo, hi - lo) for lo, hi in zip(edges, edges[1:])]
        self._tables: list[dict[int, list[int]]] | None = None  # built on the first near()

    def _keys(self, h: int) -> Iterator[int]:
        for lo, width in self._spans:
            yield (h >> lo) & ((1 << width) - 1)

    def _chunk(self, lo: int, width: int) -> np.ndarray:
        return (self.hashes >> np.uint64(lo)) & np.uint64((1 << width) - 1)

    def near(self, h: int) -> list[int]:
        """Indices of the indexed hashes within ``radius`` bits of ``h``, ascending."""
        if self._tables is None:
            self._tables = [defaultdict(list) for _ in self._spans]
            for table, (lo, width) in zip(self._tables, self._spans):
                for i, key in enumerate(self._chunk(lo, width).tolist()):
                    table[key].append(i)
        found: set[int] = set()
        for table, key in zip(self._tables, self._keys(int(h))):
            found.update(table.get(key, ()))
        if not found:
            return []
        ids = np.fromiter(sorted(found), dtype=np.int64, count=len(found))
        close = np.bitwise_count(self.hashes[ids] ^ np.uint64(int(h))) <= self.radius
        return ids[close].tolist()

    def pairs(self) -> list[tuple[int, int]]:
        """Every ``(i, j)`` with ``i < j`` whose hashes are within ``radius`` bits, sorted."""
        found = [list(zip(i.tolist(), j.tolist())) for i, j in self.pair_blocks()]
        return sorted(pair for block in found for pair in block)

    def pair_blocks(self, rows: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`pairs` as blocks of ``(i, j)`` arrays, in bounded memory.

        The candidates come from the chunk tables while they are few: random-looking hashes
        share a ~13-bit chunk with about n / 8192 others. Real photos of one kind do not look
        random (garments on black: whole chunks of their hashes are the same), and one chunk
        value then holds a large share of the pictures, whose pairs the tables would list one
        by one (50,000 Fashion-MNIST photos: gigabytes). Past n^2 / 256 candidates every pair is
        compared instead, ``rows`` hashes against all later ones at a time: about a second
        for 50,000 pictures, with only the close pairs kept.
        """
        n = len(self.hashes)
        runs = [self._runs(lo, width) for lo, width in self._spans]
        candidates = sum(int((lengths * (lengths - 1) // 2).sum()) for _, _, lengths in runs)
        if candidates > n * n // 256:
            yield from self._scan(rows)
            return
        found = [np.zeros(0, dtype=np.int64)]  # each pair as one number, i * n + j
        for order, starts, lengths in runs:
            # Members of one bucket are neighbours in ``order``: every pair within each run,
            # the runs of one length at a time.
            for length in np.unique(lengths[lengths > 1]).tolist():
                first = starts[lengths == length][:, None]
                a, b = np.triu_indices(length, 1)
                x, y = order[first + a], order[first + b]
                found.append((np.minimum(x, y) * n + np.maximum(x, y)).ravel())
        both = np.unique(np.concatenate(found))
        i, j = both // n, both % n
        close = np.bitwise_count(self.hashes[i] ^ self.hashes[j]) <= self.radius
        yield i[close], j[close]

    def _runs(self, lo: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The hashes sorted by one chunk, and where each run of one chunk value starts and
        how long it is."""
        keys = self._chunk(lo, width)
        order = np.argsort(keys, kind="stable")
        starts = np.concatenate(([0], np.flatnonzero(np.diff(keys[order])) + 1))
        return order, starts, np.diff(np.concatenate((starts, [len(keys)])))

    def _scan(self, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Close pairs by comparing each block of ``rows`` hashes with every later hash."""
        h, n = self.hashes, len(self.hashes)
        for start in range(0, n - 1, rows):
            block = h[start : start + rows, None] ^ h[None, start:]
            i, j = np.nonzero(np.bitwise_count(block) <= self.radius)
            keep = j > i  # the later hashes only (j counts from start)
            yield i[keep] + start, j[keep] + start
