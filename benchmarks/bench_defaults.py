"""Benchmark (issue 14): is the default model at least as good as a linear probe, do the
fine-tuning presets beat it, and how close is a whole run to its floor?

For the example and three real installable datasets (``real_datasets.py``), in one run:

- **floor**: one forward pass over every picture a run touches (train, validation, test):
  decoding plus the frozen network, channels-last, no gradients: what a frozen-backbone run
  cannot go below. The pooled features of that pass feed the probe.
- **probe**: scikit-learn's ``LogisticRegressionCV`` (C from 10 values by 5-fold
  cross-validation) on those features of the run's own training pictures, scored on its test
  pictures: the ten lines of scikit-learn a user could write instead.
- **quick / balanced / thorough / auto**: ``studio train DATA --preset P`` as a user runs it,
  timed from the command's start to its end (start-up, loading, caching, training, the test
  evaluation and saving), with the test accuracy it reports.
- **plain loop**: a plain timm + PyTorch loop of 10 head-only epochs that recomputes the
  backbone every epoch (``bench_cache.plain_loop``), then the same test evaluation.

    python benchmarks/bench_defaults.py [--datasets example fashion digits faces]

Targets: quick (the default's exact head) >= probe on every dataset; the best fine-tuning preset
>= probe + 5 points (or the README says by how much and why not); quick <= 1.5x the floor.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import real_datasets  # noqa: E402
from bench_cache import plain_loop  # noqa: E402
from common import machine, table  # noqa: E402

from studio.data.dataset import load_dataset  # noqa: E402
from studio.data.loaders import ImageSamples, build_transform, image_loader  # noqa: E402
from studio.models.backbones import create_backbone, data_config  # noqa: E402

PRESETS = ("quick", "balanced", "thorough", "auto")


def floor_and_features(dataset) -> tuple[float, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Seconds for one forward pass over every picture, and the pooled features per split."""
    model, _ = create_backbone("tf_efficientnet_lite0", len(dataset.classes))
    model.eval().to(memory_format=torch.channels_last)
    tf = build_transform(data_config(model))
    features = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for split in ("train", "val", "test"):
            samples = ImageSamples(dataset.splits[split], tf, len(dataset.classes), False)
            xs, ys = [], []
            for x, y in image_loader(samples, 32):
                x = x.contiguous(memory_format=torch.channels_last)
                xs.append(model.forward_head(model.forward_features(x), pre_logits=True))
                ys.append(y)
            features[split] = (torch.cat(xs).numpy(), torch.cat(ys).numpy())
    return time.perf_counter() - start, features


def probe(features) -> float:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    x, y = features["train"]
    folds = min(5, int(np.bincount(y).min()))
    model = LogisticRegressionCV(
        Cs=10, cv=StratifiedKFold(folds, shuffle=True, random_state=0), max_iter=5000
    )
    x_test, y_test = features["test"]
    return float(model.fit(x, y).score(x_test, y_test))


def studio_run(data: Path, preset: str, out: Path) -> tuple[float, float, str]:
    """``(accuracy, seconds, chosen preset)`` of ``studio train DATA --preset P``."""
    command = [sys.executable, "-m", "studio", "train", str(data), "--out", str(out)]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, "--preset", preset, "--json"], capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - start
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    finished = next(e for e in events if e["kind"] == "finished")
    chosen = json.loads((out / "config.json").read_text())["preset"]
    return finished["metrics"]["accuracy"], seconds, chosen


def bench(name: str, data: Path, work: Path) -> list[tuple]:
    dataset = load_dataset(data)
    floor, features = floor_and_features(dataset)
    rows = [(name, "floor (one forward pass)", "", f"{floor:.1f}", "1.00")]
    rows.append((name, "probe (scikit-learn)", f"{probe(features):.3f}", "", ""))
    for preset in PRESETS:
        accuracy, seconds, chosen = studio_run(data, preset, work / f"{name}-{preset}")
        label = f"auto -> {chosen}" if preset == "auto" else preset
        rows.append((name, label, f"{accuracy:.3f}", f"{seconds:.1f}", f"{seconds / floor:.2f}"))
        print(rows[-1], flush=True)
    start = time.perf_counter()
    _, accuracy, _ = plain_loop(dataset, epochs=10, batch_size=32, lr=1e-3)
    seconds = time.perf_counter() - start
    rows.append((name, "plain timm loop, 10 epochs", f"{accuracy:.3f}", f"{seconds:.1f}",
                 f"{seconds / floor:.2f}"))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["example", "fashion", "digits", "faces"],
        help="also: fashion100 (100 training pictures a class; slow: about 20 minutes)",
    )
    args = parser.parse_args()
    print(machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.datasets:
            data = real_datasets.folder(name, work)
            rows += bench(name, data, work)
            print(table(rows, ("dataset", "what", "test accuracy", "seconds", "x floor")))
    print(table(rows, ("dataset", "what", "test accuracy", "seconds", "x floor")))


if __name__ == "__main__":
    main()
