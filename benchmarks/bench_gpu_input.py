"""Benchmark (c), for a GPU machine: is training fed fast enough from image files?

Measures training images/s (AMP bfloat16 + channels-last, whole network trainable) twice in one
run: from JPEG files through the engine's own loaders (decode, resize, augment in worker
processes), and model-only on synthetic batches already on the GPU. Target: files >= 80% of
model-only.

    python benchmarks/bench_gpu_input.py [--backbone tf_efficientnet_lite0] [--batch 128]
                                         [--workers 12] [--seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, table  # noqa: E402

from studio.data.dataset import load_dataset  # noqa: E402
from studio.data.example import example_dataset  # noqa: E402
from studio.data.loaders import ImageSamples, build_transform, image_loader  # noqa: E402
from studio.models.backbones import create_backbone, data_config  # noqa: E402


def train_for(model, optimizer, batches, seconds: float) -> float:
    """Images/s over ``seconds`` of training steps (after 3 warm-up steps)."""
    done, start = 0, None
    for step, (x, y) in enumerate(batches(), 1):
        x = x.cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
        elif start is not None:
            done += len(x)
            if time.perf_counter() - start > seconds:
                break
    torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--augment", default="light")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu_input.py needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    model, _ = create_backbone(args.backbone, 3)
    model.cuda().train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dataset = load_dataset(example_dataset())
    samples = dataset.train * 64  # the small example, repeated: files are still decoded each time
    tf = build_transform(data_config(model), args.augment, training=True)
    files = ImageSamples(samples, tf, len(dataset.classes), False)

    def from_files():
        while True:
            yield from image_loader(
                files, args.batch, shuffle=True, workers=args.workers, pin_memory=True
            )

    size = model.pretrained_cfg["input_size"][-1]
    x = torch.randn(args.batch, 3, size, size, device="cuda")
    y = torch.randint(0, 3, (args.batch,), device="cuda")

    def synthetic():
        while True:
            yield x, y

    model_only = train_for(model, optimizer, synthetic, args.seconds)
    from_disk = train_for(model, optimizer, from_files, args.seconds)
    print(f"machine: {machine()}")
    print(
        f"{args.backbone}, batch {args.batch}, AMP bf16 + channels_last, {args.workers} workers, "
        f"augment {args.augment}"
    )
    print(
        table(
            [
                ("model only (synthetic batches)", f"{model_only:.0f}"),
                ("from image files (engine loaders)", f"{from_disk:.0f}"),
            ],
            ("input", "images/s"),
        )
    )
    print(f"files / model-only: {from_disk / model_only:.0%}  (target >= 80%)")


if __name__ == "__main__":
    main()
