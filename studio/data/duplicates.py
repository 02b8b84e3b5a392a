"""Identical and near-identical pictures, found from the facts one decode gives
(:mod:`studio.data.facts`): within one set (the data report, which keeps such groups in one
split) and between two sets (new pictures that are copies of training pictures: they make a
shift look smaller than it is and an accuracy on the new pictures higher).

Near duplicates: a 64-bit dHash finds candidates (resized or re-encoded copies differ by a few
bits; looked up in a multi-index hash table, :mod:`studio.data.hash_index`, so the search grows
with the number of pictures, not its square), a 256-bit one confirms them. Alone, the small hash also matches different pictures of
plain, regular surfaces (three brick tiles of the example: 4 of 64 bits, but 74+ of 256), while
resized, re-compressed or brightened copies stay within 28 of 256 bits. Last, the pictures' 16x16
grey thumbnails must agree pixel by pixel once brightness and contrast are set aside.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .facts import PictureFacts
from .hash_index import HashIndex

__all__ = ["duplicate_groups", "copies_between", "LARGE_GROUP"]

NEAR_BITS = 4  # of 64
NEAR_FINE_BITS = 40  # of 256
# Standardised grey levels, mean absolute difference of 16x16 thumbnails: copies measured up to
# 0.082 (made 3/4 the size, re-saved at JPEG quality 35, brightened 20%, doubled; photos and
# 28 px grey digits alike); different digits that pass both dHashes from 0.098 up (median 0.25).
NEAR_PIXELS = 0.09
LARGE_GROUP = 10  # a near-duplicate group this large is worth a warning


def duplicate_groups(facts: Sequence[PictureFacts]) -> tuple[list[list[int]], list[list[int]]]:
    """``(exact, near)``: groups of identical files, and groups of copies (resized, re-saved or
    brightened) that are not already one exact group.

    A group only grows by a picture that is such a copy of *every* member (complete linkage).
    Joining any linked pair (connected components) let look-alikes chain A~B~C~... across a
    whole class of similar pictures (small grey garments, digits) into one "duplicate" group of
    hundreds that then dragged the split with it.
    """
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        by_sha[f.sha1].append(i)
    exact = [g for g in by_sha.values() if len(g) > 1]
    # Candidate pairs from the hash index (studio.data.hash_index), not all n^2/2 pairs.
    index = HashIndex([f.dhash for f in facts], NEAR_BITS)
    links = _confirmed_pairs(facts, index.pair_blocks())
    near = [g for g in _complete_linkage(len(facts), links) if len(g) > 1]
    exact_sets = [set(g) for g in exact]
    return exact, [g for g in near if not any(set(g) <= s for s in exact_sets)]


_PAIRS_AT_ONCE = 20_000  # candidate pairs checked per vectorised step (bounds the memory)


def _confirmed_pairs(facts: Sequence[PictureFacts], blocks: Iterable[tuple]):
    """``(distance, i, j)`` for the candidate pairs (blocks of ``(i, j)`` arrays, within
    NEAR_BITS of each other's small hash) that are copies within two copy-steps (close fine
    hashes, close thumbnails), computed for many pairs at once: real photos of one kind
    (garments, digits, tiles) give many candidates within NEAR_BITS (millions among 50,000
    Fashion-MNIST photos), and checking them one by one in Python, or holding them all, was
    most of the report's time and memory."""
    if not facts:
        return []
    fine = np.array([[(f.fine_dhash >> (64 * k)) & 0xFFFFFFFFFFFFFFFF for k in range(4)]
                     for f in facts], dtype=np.uint64)  # fmt: skip
    thumbs = np.frombuffer(b"".join(f.thumb for f in facts), np.uint8).reshape(len(facts), -1)
    thumbs = thumbs.astype(np.float32)
    thumbs = (thumbs - thumbs.mean(1, keepdims=True)) / (thumbs.std(1, keepdims=True) + 1.0)
    links = []
    for i, j in _rechunk(blocks, _PAIRS_AT_ONCE):
        close = np.bitwise_count(fine[i] ^ fine[j]).sum(1) <= NEAR_FINE_BITS
        i, j = i[close], j[close]
        distance = np.abs(thumbs[i] - thumbs[j]).mean(1)
        keep = distance <= 2 * NEAR_PIXELS  # copies of one original
        links += zip(distance[keep].tolist(), i[keep].tolist(), j[keep].tolist())
    return links


def _rechunk(blocks: Iterable[tuple], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The pairs of ``blocks`` again, in pieces of at most ``size``."""
    for i, j in blocks:
        for start in range(0, len(i), size):
            yield i[start : start + size], j[start : start + size]


def copies_between(
    new: Sequence[PictureFacts], old: Sequence[PictureFacts]
) -> list[tuple[int, int, str]]:
    """``(index in new, index in old, "identical" | "near copy")`` for each new picture that is
    a copy of an old one (its closest, identical files first); one row per new picture. The
    candidates come from an index of the old pictures' hashes and are confirmed as the report's
    are (:func:`_confirmed_pairs`, on the two sets side by side)."""
    by_sha = {f.sha1: j for j, f in enumerate(old)}
    identical = {i: by_sha[f.sha1] for i, f in enumerate(new) if f.sha1 in by_sha}
    index, offset = HashIndex([f.dhash for f in old], NEAR_BITS), len(new)
    blocks = (
        (np.full(len(near), i), np.asarray(near) + offset)
        for i, f in enumerate(new)
        if i not in identical and (near := index.near(f.dhash))
    )
    closest: dict[int, tuple[float, int]] = {}
    for distance, i, j in _confirmed_pairs([*new, *old], blocks):
        if distance <= NEAR_PIXELS and (distance, j) < closest.get(i, (np.inf, 0)):
            closest[i] = (distance, j)
    rows = []
    for i in range(len(new)):
        if i in identical:
            rows.append((i, identical[i], "identical"))
        elif i in closest:
            rows.append((i, closest[i][1] - offset, "near copy"))
    return rows


def _complete_linkage(n: int, links: list[tuple[float, int, int]]) -> list[list[int]]:
    """Groups built closest pairs first: a picture joins when it is a copy of one member and
    within two copy-steps of every member (two copies of one original differ by both steps),
    so a group's spread is bounded and look-alikes cannot chain."""
    linked = {(i, j) for _, i, j in links}
    group_of = list(range(n))
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    for distance, i, j in sorted(links):
        a, b = group_of[i], group_of[j]
        if a == b or distance > NEAR_PIXELS:
            continue
        if all((min(p, q), max(p, q)) in linked for p in members[a] for q in members[b]):
            for p in members[b]:
                group_of[p] = a
            members[a] += members.pop(b)
    return sorted((sorted(g) for g in members.values()), key=lambda g: g[0])
