"""Benchmark: seconds per attribution map, per method, against the issue's targets.

EfficientNet-Lite0 (the default backbone, bundled ImageNet weights) on scikit-image's ``chelsea``
at 224 px. Each method runs once to warm up, then ``--repeats`` times; the median is reported,
with the ratio to one plain forward pass measured in the same run (machines are noisy).

    python benchmarks/bench_explain.py [--device cpu|cuda] [--repeats 3]

Targets: Grad-CAM under 1 s and IG (50 steps) under 10 s on a 2-core CPU; under 50 ms and
0.5 s on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, table  # noqa: E402

from studio.inspection.explain import METHODS, Explainer, attribute  # noqa: E402

TARGETS = {"cpu": {"gradcam": 1.0, "ig": 10.0}, "cuda": {"gradcam": 0.05, "ig": 0.5}}


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up: first call finds the Grad-CAM layer, allocates, compiles kernels
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 CPU, 64 GPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch_size or (64 if device.type == "cuda" else 16)
    from PIL import Image
    from skimage import data

    explainer = Explainer.from_backbone("tf_efficientnet_lite0", device=device)
    x, _ = explainer.prepare(Image.fromarray(data.chelsea()))
    target = int(explainer.model(x).argmax())
    layer = explainer.cam_layer()

    with torch.no_grad():
        forward = timed(lambda: explainer.model(x), args.repeats, device)
    rows = []
    for key, method in METHODS.items():
        options = {"layer": layer} if method.needs_layer else {}
        seconds = timed(
            lambda key=key, options=options: attribute(
                explainer.model, x, key, target, batch_size=batch, **options
            ),
            args.repeats,
            device,
        )
        goal = TARGETS.get(device.type, {}).get(key)
        verdict = "" if goal is None else ("met" if seconds < goal else "MISSED") + f" (< {goal} s)"
        rows.append((method.title, f"{seconds:.3f}", f"{seconds / forward:.0f}x", verdict))
    print(f"machine: {machine()}")
    print(f"one forward pass: {forward * 1000:.1f} ms; batch size {batch}\n")
    print(table(rows, ("method", "seconds", "vs forward", "target")))


if __name__ == "__main__":
    main()
