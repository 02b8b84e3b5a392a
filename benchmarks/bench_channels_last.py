"""Benchmark (b): full fine-tuning throughput with and without channels-last memory format.

Model-only training steps (forward, backward, AdamW step) on fixed random batches, so that
decoding does not blur the comparison; both variants run in this one process, alternating.

    python benchmarks/bench_channels_last.py [--backbone tf_efficientnet_lite0] [--batch 16]

On a GPU the steps also run under bfloat16 autocast, as ``studio.training.train`` does.
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

from studio.models.backbones import create_backbone  # noqa: E402


def steps_per_second(model, x, y, optimizer, steps: int, device) -> float:
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast:
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = create_backbone(args.backbone, 10)
    model.to(device).train()
    size = model.pretrained_cfg["input_size"][-1]
    x = torch.randn(args.batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    results = {"contiguous (NCHW)": [], "channels_last (NHWC)": []}
    for _ in range(args.rounds):
        for name in results:
            fmt = torch.channels_last if "last" in name else torch.contiguous_format
            model.to(memory_format=fmt)
            xs = x.contiguous(memory_format=fmt)
            results[name].append(steps_per_second(model, xs, y, optimizer, args.steps, device))
    rows = [(name, f"{max(v) * args.batch:.1f}") for name, v in results.items()]
    print(f"machine: {machine()}")
    print(
        f"full fine-tuning of {args.backbone}, batch {args.batch}, {size}px, best of "
        f"{args.rounds} rounds of {args.steps} steps"
    )
    print(table(rows, ("memory format", "images/s")))
    base, last = (max(v) for v in results.values())
    print(f"channels_last / contiguous: {last / base:.2f}x")


if __name__ == "__main__":
    main()
