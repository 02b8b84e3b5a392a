"""Benchmark (issue 11): does the shift test see a real shift, and stay quiet without one?

Over 3 seeds, with the features of EfficientNet-Lite0 (ImageNet weights, offline):

- **shifted pair**: the example (108 photos of brick, grass, gravel) against a shifted copy made
  by ``studio.domain.example.shifted_copy`` with that seed (colour cast, blur, rotation, JPEG);
- **same source**: two random halves of the example (the seed draws the halves);
- **Fashion-MNIST**: two random halves of 300 Fashion-MNIST pictures (Debian's
  ``dataset-fashion-mnist``; ``real_datasets.py``), the same source, so no shift expected; and
  one half against a shifted copy of the other.

Prints MMD², the permutation test's p-value (500 permutations) and the proxy A-distance.
Targets: p < 0.01 on every shifted pair; p > 0.05 on most same-source pairs.

    python benchmarks/bench_shift.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import real_datasets  # noqa: E402
from common import machine, table  # noqa: E402

from studio.data.example import example_dataset  # noqa: E402
from studio.domain.example import shifted_copy  # noqa: E402
from studio.domain.pictures import load_pictures  # noqa: E402
from studio.domain.shift import Embedder, measure_shift  # noqa: E402

HEADER = ("pair", "seed", "n", "MMD²", "p-value", "proxy A-distance", "verdict")


def halves(source: Path, dest: Path, seed: int) -> tuple[Path, Path]:
    """Two random halves of ``source`` (per class), drawn with ``seed``."""
    rng = random.Random(seed)
    out = (dest / "a", dest / "b")
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        pictures = sorted(p for p in folder.iterdir() if p.is_file())
        rng.shuffle(pictures)
        for i, picture in enumerate(pictures):
            target = out[i % 2] / folder.name
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(picture, target / picture.name)
    return out


def measure(label: str, seed: int, a: Path, b: Path, embedder: Embedder) -> tuple:
    r = measure_shift(load_pictures(a), load_pictures(b), embedder, seed=seed)
    row = (label, seed, f"{r['n_source']}+{r['n_target']}", f"{r['mmd']:.4f}",
           f"{r['p_value']:.4f}", f"{r['a_distance']:.2f}", r["verdict"])  # fmt: skip
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    print(machine(), flush=True)
    embedder = Embedder.from_backbone("tf_efficientnet_lite0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fashion = real_datasets.folder("fashion", work)  # train/ (300) and test/ (1000)
        for seed in args.seeds:
            s = work / f"seed{seed}"
            example = example_dataset()
            rows.append(measure("example vs shifted copy", seed, example,
                                shifted_copy(example, s / "shifted", seed), embedder))  # fmt: skip
            rows.append(measure("example: two halves", seed, *halves(example, s / "halves", seed),
                                embedder))  # fmt: skip
            train, test = halves(fashion / "train", s / "fashion", seed)
            rows.append(measure("Fashion-MNIST: two halves of train", seed, train, test, embedder))
            rows.append(measure("Fashion-MNIST half vs shifted copy", seed, train,
                                shifted_copy(test, s / "fashion-shifted", seed), embedder))  # fmt: skip
    print(table(rows, HEADER))


if __name__ == "__main__":
    main()
