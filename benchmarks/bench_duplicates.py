"""Benchmark (issue 13): near-duplicate candidates through the hash index vs all pairs.

Random 64-bit hashes (seeded) with a tenth planted as near copies (0-6 bits flipped), at 1k,
5k, 20k and 50k pictures: the seconds for the all-pairs search the studio used before (one
vectorised XOR-popcount row per picture) and for ``studio.data.hash_index.HashIndex``, both
finding the same pairs (checked), and how each grows per step against the linear prediction.

    python benchmarks/bench_duplicates.py [--sizes 1000 5000 20000 50000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import machine, table  # noqa: E402

from studio.data.duplicates import NEAR_BITS  # noqa: E402
from studio.data.hash_index import HashIndex  # noqa: E402


def hashes(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    base = [int(x) for x in rng.integers(0, 2**63, n - n // 10, dtype=np.int64)]
    for h in base[: n // 10]:
        bits = rng.choice(64, size=int(rng.integers(0, 7)), replace=False)
        base.append(h ^ int(sum(1 << int(b) for b in bits)))
    return base


def all_pairs(values: list[int]) -> set[tuple[int, int]]:
    h = np.asarray(values, dtype=np.uint64)
    found = set()
    for i in range(len(h) - 1):
        for j in np.nonzero(np.bitwise_count(h[i + 1 :] ^ h[i]) <= NEAR_BITS)[0]:
            found.add((i, int(j) + i + 1))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 20000, 50000])
    args = parser.parse_args()
    print(machine(), flush=True)
    rows, last = [], None
    for n in args.sizes:
        values = hashes(n)
        start = time.perf_counter()
        brute = all_pairs(values)
        t_all = time.perf_counter() - start
        start = time.perf_counter()
        indexed = set(HashIndex(values, NEAR_BITS).pairs())
        t_index = time.perf_counter() - start
        assert indexed == brute, n
        growth = f"{t_index / last[1] / (n / last[0]):.2f}" if last else "-"
        rows.append(
            (n, len(brute), f"{t_all:.2f}", f"{t_index:.2f}", f"{t_all / t_index:.1f}x", growth)
        )
        print(rows[-1], flush=True)
        last = (n, t_index)
    print(table(rows, ("pictures", "near pairs", "all pairs s", "index s", "speed-up",
                       "index growth / linear")))  # fmt: skip


if __name__ == "__main__":
    main()
