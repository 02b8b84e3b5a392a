"""Benchmark (issue 11): does adaptation win back what a shift costs?

Two pairs, each over the seeds:

- ``example``: the example is split into its usual training and test pictures; a run is trained
  on it with the Balanced preset (the source-only model: its top group fine-tuned); the shifted
  copy of the example (``studio.domain.example.shifted_copy`` with that seed: colour cast, blur,
  rotation, JPEG) is the new camera.
- ``fashion``: Fashion-MNIST from another real source (Debian's ``dataset-fashion-mnist``,
  ``real_datasets.py``): 30 training pictures a class for the run, and 30 *other* pictures a
  class, shifted the same way, as the new camera (so the new pictures were never trained on).

Each method (``studio adapt --method ...``) then trains with the shifted pictures *unlabelled*
and is measured on them *labelled* (``--eval``, used only to measure). Prints the source-only
and adapted accuracy on the shifted pictures, and the MMD between the training and the shifted
pictures before and after, in each model's features.

    python benchmarks/bench_adapt.py [--pairs example fashion] [--seeds 0 1 2]
                                     [--methods coral dan dann reweight]

Target: the best method at least 5 points above source-only on the shifted pair.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import real_datasets  # noqa: E402
from bench_compress import studio  # noqa: E402
from common import machine, table  # noqa: E402

from studio.data.example import example_dataset  # noqa: E402
from studio.domain.example import shifted_copy  # noqa: E402

HEADER = ("pair", "seed", "method", "source-only accuracy", "adapted accuracy", "points gained",
          "MMD² before", "MMD² after")  # fmt: skip


def pair(name: str, seed: int, work: Path) -> tuple[Path, Path]:
    """(training pictures, the shifted new pictures) of the pair ``name`` for ``seed``."""
    if name == "example":
        return example_dataset(), shifted_copy(example_dataset(), work / "phone", seed)
    fashion = real_datasets.fashion(work / "fashion", train=30, test=30, seed=seed)
    return fashion / "train", shifted_copy(fashion / "test", work / "phone", seed)


def bench(name: str, seed: int, work: Path, methods: list[str]) -> list[tuple]:
    work = work / f"{name}{seed}"
    source, phone = pair(name, seed, work)
    run = work / "run"
    studio("train", source, "--out", run, "--preset", "balanced", "--seed", seed)
    rows = []
    for method in methods:
        out = work / method
        studio("adapt", run, "--target", phone, "--method", method, "--eval", phone,
               "--out", out)  # fmt: skip
        r = json.loads((out / "adaptation.json").read_text())
        before, after = r["source_only"], r["adapted"]
        row = (name, seed, method, f"{before['accuracy']:.3f}", f"{after['accuracy']:.3f}",
               f"{100 * (after['accuracy'] - before['accuracy']):+.1f}",
               f"{before['mmd']:.4f}", f"{after['mmd']:.4f}")  # fmt: skip
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", nargs="+", default=["example", "fashion"],
                        choices=["example", "fashion"])  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["coral", "dan", "dann", "reweight"])
    args = parser.parse_args()
    print(machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.pairs:
            for seed in args.seeds:
                rows += bench(name, seed, Path(tmp), args.methods)
    print(table(rows, HEADER))


if __name__ == "__main__":
    main()
