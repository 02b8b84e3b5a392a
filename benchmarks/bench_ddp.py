"""Benchmark (issue 13): training images/s on 1 and N devices through ``studio train --devices``.

The whole network trains (``--freeze none --no-cache``: every epoch decodes the pictures and runs
the full forward and backward pass, the work DDP splits), for a few epochs of the example (or
``--data``); each epoch's seconds come from the run's ``history.csv`` and the first epoch (warm-up:
cuDNN autotuning, loader workers starting) is left out. Images/s = training pictures / epoch
seconds; the scaling efficiency is N-device images/s over N times 1-device images/s.

On a GPU machine: one process per GPU (NCCL), the figure the README asks for. On a CPU it runs
too (gloo, N processes sharing the cores), which shows what the processes' coordination costs,
not a speed-up: there is no more hardware to spread onto.

    python benchmarks/bench_ddp.py [--devices 2] [--data DIR] [--epochs 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import machine, table  # noqa: E402


def images_per_second(data: str, devices: int, epochs: int, batch: int, work: Path) -> float:
    """Training pictures per second over the epochs after the first."""
    out = work / f"run-{devices}"
    command = [sys.executable, "-m", "studio", "train", data, "--out", str(out), "--preset",
               "custom", "--freeze", "none", "--no-cache", "--epochs", str(epochs),
               "--batch-size", str(batch), "--patience", "0", "--devices", str(devices)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{devices} device(s) failed:\n{done.stderr[-2000:]}")
    with open(out / "history.csv") as fh:
        seconds = [float(row["seconds"]) for row in csv.DictReader(fh)][1:]
    sizes = json.loads((out / "run_info.json").read_text())["sizes"]
    return sizes["train"] * len(seconds) / sum(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--data", default=None, help="default: the example dataset")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="the total over the devices")
    args = parser.parse_args()
    if args.data is None:
        from studio.data.example import example_dataset

        args.data = str(example_dataset())
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory() as work:
        one = images_per_second(args.data, 1, args.epochs, args.batch, Path(work))
        many = images_per_second(args.data, args.devices, args.epochs, args.batch, Path(work))
    rows = [(1, f"{one:.1f}", "-"), (args.devices, f"{many:.1f}",
                                      f"{many / (args.devices * one):.0%}")]  # fmt: skip
    print(table(rows, ("devices", "images/s", "scaling efficiency")))


if __name__ == "__main__":
    main()
