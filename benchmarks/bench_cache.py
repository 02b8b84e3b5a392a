"""Benchmark (a): frozen-backbone training with the feature cache vs a plain loop.

The baseline is what a plain timm + PyTorch script does: freeze the backbone, then every epoch
decode the images and run the whole network forward, training only the head. Transfer Studio
computes the frozen part once (``studio.training.cache``). Both train the same head on the same data for
the same epochs; the script prints both accuracies and the ratios, measured in this one run.

    python benchmarks/bench_cache.py [--epochs 10] [--data assets/example]

Targets (issue 3): cached >= 8x faster than the plain loop; the cached run's training (caching
included) <= 1.2x the time of one plain forward pass over the training images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, table  # noqa: E402

from studio import events as ev  # noqa: E402
from studio.data.dataset import load_dataset  # noqa: E402
from studio.data.example import example_dataset  # noqa: E402
from studio.data.loaders import ImageSamples, build_transform, image_loader  # noqa: E402
from studio.models.backbones import create_backbone, data_config  # noqa: E402
from studio.training.train import TrainConfig, train  # noqa: E402


def plain_loop(dataset, epochs: int, batch_size: int, lr: float) -> tuple[float, float, float]:
    """The baseline: a frozen timm backbone recomputed every epoch. Returns (train s, acc, fwd s)."""
    torch.manual_seed(0)
    model, _ = create_backbone("tf_efficientnet_lite0", len(dataset.classes))
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier.")
    tf = build_transform(data_config(model))
    train_ds = ImageSamples(dataset.train, tf, len(dataset.classes), False)
    test_ds = ImageSamples(dataset.test, tf, len(dataset.classes), False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        for x, _ in image_loader(train_ds, batch_size, workers=0):
            model(x)
    forward_seconds = time.perf_counter() - start

    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        model.apply(lambda m: m.eval() if isinstance(m, torch.nn.BatchNorm2d) else None)
        for x, y in image_loader(train_ds, batch_size, shuffle=True, seed=epoch, workers=0):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in image_loader(test_ds, batch_size, workers=0):
            correct += int((model(x).argmax(1) == y).sum())
    return seconds, correct / len(test_ds), forward_seconds


def cached_run(dataset, epochs: int, batch_size: int, lr: float) -> tuple[float, float, float]:
    """Transfer Studio's engine. Returns (seconds to the last epoch, accuracy, whole run s)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            out=str(Path(tmp) / "run"),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            augment="none",
            patience=0,
            head_solver="sgd",  # the same epochs as the plain loop (the exact fit has no epochs)
        )
        start = time.perf_counter()
        t_started = t_last_epoch = None
        for event in train(config, dataset):
            if isinstance(event, ev.Started):
                t_started = time.perf_counter()
            elif isinstance(event, ev.Epoch):
                t_last_epoch = time.perf_counter()
            elif isinstance(event, ev.Finished):
                accuracy = event.metrics["accuracy"]
        return t_last_epoch - t_started, accuracy, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(example_dataset()))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    print(f"machine: {machine()}")
    print(
        f"data: {args.data}: {len(dataset.train)} train / {len(dataset.val)} val / "
        f"{len(dataset.test)} test images; {args.epochs} epochs, frozen EfficientNet-Lite0"
    )
    plain_s, plain_acc, forward_s = plain_loop(dataset, args.epochs, args.batch_size, args.lr)
    cached_s, cached_acc, whole_s = cached_run(dataset, args.epochs, args.batch_size, args.lr)
    print(
        table(
            [
                ("plain loop (backbone every epoch)", f"{plain_s:.1f}", f"{plain_acc:.3f}"),
                ("studio, cached (caching + training)", f"{cached_s:.1f}", f"{cached_acc:.3f}"),
                ("studio, whole run (load, cache, train, evaluate, save)", f"{whole_s:.1f}", ""),
                ("one plain forward pass over the train images", f"{forward_s:.1f}", ""),
            ],
            ("what", "seconds", "test accuracy"),
        )
    )
    print(f"speed-up, cached vs plain:            {plain_s / cached_s:5.1f}x   (target >= 8x)")
    print(f"cached training / one forward pass:   {cached_s / forward_s:5.2f}x   (target <= 1.2x)")


if __name__ == "__main__":
    main()
