"""Benchmark (issue 10): what int8 quantization and structured pruning buy, measured here.

For the example and Fashion-MNIST (``real_datasets.py``; 30 training pictures a class), in one
run: the default run (``studio train DATA --preset quick``), then its variants as a user makes
them (``studio compress``): int8, dynamic int8, fp16 and bf16 (where the CPU has AVX-512 BF16
or AMX), and pruning 30% and 50% of the channels with a 3-epoch recovery. Every ratio compares a
variant with its parent measured in the same sitting and the same runtime (ONNX Runtime on the
CPU, 2 threads; bf16 and its parent in PyTorch; see ``compression.json``).

    python benchmarks/bench_compress.py [--datasets example fashion] [--epochs 3] [--only fp16]

Targets: int8 >= 1.5x faster at batch 1 on a CPU without VNNI (>= 2x with VNNI or AMX: the
first line printed names the CPU and says whether it has them), >= 3.5x smaller, <= 1 point
of accuracy lost; pruning 30-50% >= 1.3x faster at <= 2 points lost after recovery.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import real_datasets  # noqa: E402
from common import machine, table  # noqa: E402

from studio.models.bfloat16 import bf16_fast_here  # noqa: E402

HEADER = ("dataset", "variant", "accuracy", "points lost", "x faster b1", "x faster b32",
          "x smaller", "same answers")  # fmt: skip


def studio(*args) -> None:
    subprocess.run([sys.executable, "-m", "studio", *map(str, args)], check=True,
                   capture_output=True, text=True)  # fmt: skip


def row(dataset: str, label: str, variant: Path) -> tuple:
    r = json.loads((variant / "compression.json").read_text())
    p = r["parent"]
    lat, plat = r["latency_ms"], p["latency_ms"]
    return (
        dataset, label, f"{r['accuracy']:.3f}",
        f"{100 * (p['accuracy'] - r['accuracy']):+.1f}",
        f"{plat['batch1']['median_ms'] / lat['batch1']['median_ms']:.2f}",
        f"{plat['batch32']['median_ms'] / lat['batch32']['median_ms']:.2f}",
        f"{p['size_bytes'] / r['size_bytes']:.2f}",
        f"{r['agreement_with_parent']:.0%}",
    )  # fmt: skip


FORMATS = {
    "int8": "int8 (ONNX Runtime, static, per-channel)",
    "int8-dynamic": "int8 dynamic (linear layers only)",
    "fp16": "fp16 (ONNX Runtime, float16 graph)",
    "bf16": "bf16 (PyTorch, vs the float model in PyTorch)",
}


def bench(name: str, data: Path, work: Path, epochs: int, only: list[str]) -> list[tuple]:
    run = work / f"{name}-run"
    studio("train", data, "--out", run, "--preset", "quick")
    parent = json.loads((run / "metrics.json").read_text())["accuracy"]
    rows = [(name, "original (quick)", f"{parent:.3f}", "", "1.00", "1.00", "1.00", "")]
    for to, label in FORMATS.items():
        if to == "bf16" and to in only and not bf16_fast_here():
            print("bf16 skipped: this CPU has neither AVX-512 BF16 nor AMX", flush=True)
        elif to in only:
            out = work / f"{name}-{to}"
            studio("compress", run, "--method", "quantize", "--to", to, "--out", out)
            rows.append(row(name, label, out))
    for ratio in (0.3, 0.5) if "prune" in only else ():
        out = work / f"{name}-prune{int(ratio * 100)}"
        studio("compress", run, "--method", "prune", "--ratio", ratio, "--finetune-epochs",
               epochs, "--out", out)  # fmt: skip
        rows.append(row(name, f"pruned {ratio:.0%} + {epochs} recovery epochs", out))
        chain = work / f"{name}-prune{int(ratio * 100)}-int8"
        studio("compress", out, "--method", "quantize", "--out", chain)
        rows.append(row(name, "  then int8 (vs the pruned model)", chain))
    for r in rows:
        print(r, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["example", "fashion"])
    parser.add_argument("--epochs", type=int, default=3, help="recovery epochs after pruning")
    parser.add_argument("--only", nargs="+", default=[*FORMATS, "prune"],
                        help="which variants: int8 int8-dynamic fp16 bf16 prune")  # fmt: skip
    args = parser.parse_args()
    print(machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.datasets:
            data = real_datasets.folder(name, work)
            rows += bench(name, data, work, args.epochs, args.only)
    print(table(rows, HEADER))


if __name__ == "__main__":
    main()
