"""Benchmark (issue 13): how ``studio data`` and a 3-epoch frozen ``studio train`` grow with the
number of pictures, in time and peak memory.

Real photos: Fashion-MNIST's 70,000 (Zalando; Debian's ``dataset-fashion-mnist``), a seeded,
class-balanced sample of N written as PNG class folders (28x28 grayscale, the "50,000 small
pictures" of the issue). For each N (default 1k, 5k, 20k, 50k) two commands run, each in a fresh
process with an empty feature memo and picture-facts cache, as a user would run them:

- ``studio data DIR``: decode and check every picture, hashes, near duplicates, the report;
- ``studio train DIR --preset custom --freeze backbone --head-solver sgd --epochs 3
  --augment none``: the frozen backbone's features computed once (the bulk), 3 epochs of the
  head on them, the held-out evaluation, the model saved.

Time is wall-clock; peak memory is the command's maximum resident set (the largest of the
process and the workers it waited for; ``common.measured``). Growth per step
is the time's ratio to the linear prediction from the previous size (1.00 = exactly linear;
the issue's target is at most 1.3) and memory must stay under 2 GB at 50k.

    python benchmarks/bench_scale.py [--sizes 1000 5000 20000 50000] [--keep DIR] [--data-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import machine, measured, table  # noqa: E402
from real_datasets import FASHION_CLASSES, FASHION_DIR, _idx  # noqa: E402

TRAIN = ["--preset", "custom", "--freeze", "backbone", "--head-solver", "sgd", "--epochs", "3",
         "--augment", "none"]  # fmt: skip


def all_fashion() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's 60,000 training and 10,000 test photos together, with their labels."""
    if not FASHION_DIR.is_dir():
        raise SystemExit("needs Fashion-MNIST: apt-get install dataset-fashion-mnist")
    parts = [(_idx(FASHION_DIR / f"{p}-images-idx3-ubyte.gz"),
              _idx(FASHION_DIR / f"{p}-labels-idx1-ubyte.gz")) for p in ("train", "t10k")]  # fmt: skip
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_sample(images, labels, n: int, dest: Path, seed: int = 0) -> Path:
    """``n`` photos, the same number of each class (seeded), as ``dest/<class>/*.png``."""
    rng = np.random.default_rng(seed)
    per_class = n // len(FASHION_CLASSES)
    for label, name in enumerate(FASHION_CLASSES):
        (dest / name).mkdir(parents=True, exist_ok=True)
        for i in rng.permutation(np.flatnonzero(labels == label))[:per_class]:
            Image.fromarray(images[i]).save(dest / name / f"{name}_{i:05d}.png")
    return dest


def timed(args: list[str], env: dict, cwd: Path = ROOT) -> tuple[float, float]:
    """Seconds and peak resident memory (MB) of ``python -m studio ARGS`` in a fresh process,
    run from ``cwd`` (another checkout's, to compare versions)."""
    seconds, peak, status, tail = measured([sys.executable, "-m", "studio", *args], cwd, env)
    if status != 0:
        raise SystemExit(f"studio {' '.join(args)} failed in {cwd}:\n{tail}")
    return seconds, peak


def growth(now: tuple[int, float], before: tuple[int, float] | None) -> str:
    """Time at this size over the linear prediction from the size before."""
    if before is None or not before[1]:
        return "-"
    return f"{now[1] / (before[1] * now[0] / before[0]):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 20000, 50000])
    parser.add_argument("--keep", type=Path, help="write the pictures and runs here and keep them")
    parser.add_argument("--data-only", action="store_true", help="time `studio data` alone")
    args = parser.parse_args()
    print(machine(), flush=True)
    images, labels = all_fashion()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    rows, last = [], {"data": None, "train": None}
    try:
        for n in args.sizes:
            data = write_sample(images, labels, n, work / f"fashion-{n}")
            env = {**os.environ, "STUDIO_CACHE": str(work / f"cache-{n}"),
                   "STUDIO_FEATURE_MEMO": str(work / f"memo-{n}"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
            t_data, m_data = timed(["data", str(data)], env)
            t_train, m_train = (
                (0.0, 0.0)
                if args.data_only
                else timed(["train", str(data), "--out", str(work / f"run-{n}"), *TRAIN], env)
            )
            rows.append((n, f"{t_data:.1f}", growth((n, t_data), last["data"]), f"{m_data:.0f}",
                         f"{t_train:.1f}", growth((n, t_train), last["train"]),
                         f"{m_train:.0f}"))  # fmt: skip
            print(rows[-1], flush=True)
            last = {"data": (n, t_data), "train": (n, t_train)}
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows, ("pictures", "data s", "growth", "data MB", "train s", "growth",
                       "train MB")))  # fmt: skip


if __name__ == "__main__":
    main()
