"""Benchmark (issue 13): ``studio data`` on thousands of large photos, against the version before
the decode pass moved to worker processes and decoded JPEGs for their facts at 1/8 size.

The photos: scikit-image's bundled real photos (astronaut, Chelsea the cat, coffee, a rocket,
a stained tissue sample, the Hubble deep field, a retina; one class each), each new picture a
seeded random crop (40-100% of the side), mirror and brightness/contrast change of one of them,
enlarged to 3000x2000 pixels (6 megapixels, a phone photo's order) and saved as a JPEG (quality
88, about 0.5-1 MB). Enlarged photos decode like camera photos of the same size (the decoder's
work is per pixel and per coefficient), which is what is measured here.

Each size is measured by both versions, each command in a fresh process with empty caches, in
turns: ``studio data DIR`` with this checkout, and with ``--baseline REV`` (default: the commit
before the change) checked out into a temporary worktree and run with the same Python. Time is
wall-clock, peak memory the command's or the largest process it waited for
(``common.measured``).

    python benchmarks/bench_photos.py [--sizes 1000 5000] [--fashion 20000] [--baseline REV]
                                      [--keep DIR] [--train]

``--fashion N`` measures N small pictures too (Fashion-MNIST's 28x28 PNGs, as in
``bench_scale.py``), where decoding is cheap and the worker processes are what counts.

``--train`` times ``bench_scale.py``'s 3-epoch frozen ``studio train`` instead of ``studio
data`` (pass ``--baseline`` the commit before JPEGs were decoded at the model's size for it,
``0bba691``): a model's preparation shrinks the shorter side to 256 pixels, so a 6-megapixel
decode was mostly thrown away.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import machine, table  # noqa: E402

SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
           "hubble_deep_field", "retina")  # fmt: skip
SIZE = (3000, 2000)
BASELINE = "975ce78"  # main before the decode pass moved to worker processes


def _photo(job: tuple[str, int, Path]) -> None:
    """One seeded large photo from a scikit-image photo (run in worker processes)."""
    from skimage import data

    name, seed, target = job
    rng = np.random.default_rng(seed)
    source = Image.fromarray(getattr(data, name)()).convert("RGB")
    w, h = source.size
    side = rng.uniform(0.4, 1.0)
    cw, ch = max(16, int(w * side)), max(16, int(h * side))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = source.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    img.resize(SIZE, Image.Resampling.BICUBIC).save(target, quality=88)


def write_photos(n: int, dest: Path, seed: int = 0) -> Path:
    """``n`` large photos as ``dest/<source>/*.jpg``, the same number from each source."""
    jobs = []
    for k, name in enumerate(SOURCES):
        (dest / name).mkdir(parents=True, exist_ok=True)
        jobs += [(name, seed * 1_000_003 + k * 100_000 + i, dest / name / f"{name}_{i:05d}.jpg")
                 for i in range(n // len(SOURCES))]  # fmt: skip
    with ProcessPoolExecutor() as pool:
        list(pool.map(_photo, jobs, chunksize=16))
    return dest


def _write(kind: str, n: int, work: Path) -> Path:
    """The pictures of one row (written once; a kept folder is reused)."""
    if kind == "large photos":
        dest = work / f"photos-{n}"
        return dest if dest.is_dir() else write_photos(n, dest)
    from bench_scale import all_fashion, write_sample

    dest = work / f"fashion-{n}"
    return dest if dest.is_dir() else write_sample(*all_fashion(), n, dest)


def timed(cwd: Path, data: Path, cache: Path, train: bool = False) -> tuple[float, float]:
    """Seconds and peak resident memory (MB) of ``studio data DATA`` (or, with ``train``, the
    3-epoch frozen training of ``bench_scale.py``) run from ``cwd``."""
    from bench_scale import TRAIN
    from bench_scale import timed as studio_timed

    env = {**os.environ, "STUDIO_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(cwd)}
    shutil.rmtree(cache, ignore_errors=True)
    command = (
        ["train", str(data), "--out", str(cache / "run"), *TRAIN] if train else ["data", str(data)]
    )
    return studio_timed(command, env, cwd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 5000])
    parser.add_argument("--baseline", default=BASELINE, help="the version to compare with")
    parser.add_argument("--fashion", nargs="*", type=int, default=[],
                        help="also this many Fashion-MNIST pictures (small PNGs)")  # fmt: skip
    parser.add_argument("--keep", type=Path, help="write the photos here and keep them")
    parser.add_argument("--train", action="store_true", help="time training, not studio data")
    args = parser.parse_args()
    print(machine(), flush=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-photos-"))
    old = work / "baseline"
    if not old.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.baseline], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
    rows = []
    sets = [("large photos", n) for n in args.sizes] + [("Fashion-MNIST", n) for n in args.fashion]
    try:
        for kind, n in sets:
            start = time.perf_counter()
            data = _write(kind, n, work)
            print(f"{n} {kind} written in {time.perf_counter() - start:.0f} s", flush=True)
            t_old, m_old = timed(old, data, work / "cache-old", args.train)
            t_new, m_new = timed(ROOT, data, work / "cache-new", args.train)
            rows.append((kind, n, f"{t_old:.1f}", f"{m_old:.0f}", f"{t_new:.1f}", f"{m_new:.0f}",
                         f"{t_old / t_new:.2f}"))  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                       capture_output=True)  # fmt: skip
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows, ("pictures", "n", "before s", "before MB", "now s", "now MB", "x faster")))


if __name__ == "__main__":
    main()
