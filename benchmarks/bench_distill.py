"""Benchmark (issue 10): what a teacher adds to a student, and what distillation costs, measured here.

For the example and Fashion-MNIST (``real_datasets.py``), in one sitting: EfficientNet-Lite2
trained with the Balanced preset (the teacher), then ``studio compress --method distill
--student tf_efficientnet_lite0``, which also trains the same student without the teacher on
the same split, settings and seed (``compression.json["alone"]``). Every figure comes from the
runs' own records: accuracy on the held-out test pictures, the student's speed against the
teacher's (ONNX Runtime, 2 threads, measured together), the time of the teacher's one pass over
the training pictures and of each student's training.

    python benchmarks/bench_distill.py [--datasets example fashion] [--alpha 0.7]

Targets: the distilled student at least as accurate as the student alone (the teacher adds,
or at least costs nothing); distillation's training time (the teacher's pass included) within
1.3x of training the student alone.
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

HEADER = ("dataset", "teacher Lite2", "student + teacher", "student alone", "points added",
          "x faster b1 than teacher", "time vs alone", "teacher pass s")  # fmt: skip


def bench(name: str, data: Path, work: Path, alpha: float, temperature: float) -> tuple:
    teacher = work / f"{name}-lite2"
    studio("train", data, "--out", teacher, "--preset", "balanced",
           "--backbone", "tf_efficientnet_lite2")  # fmt: skip
    student = work / f"{name}-student"
    studio("compress", teacher, "--method", "distill", "--student", "tf_efficientnet_lite0",
           "--alpha", alpha, "--temperature", temperature, "--out", student)  # fmt: skip
    r = json.loads((student / "compression.json").read_text())
    step, parent, alone = r["step"], r["parent"], r["alone"]
    distill_s = step["teacher_seconds"] + step["student_seconds"]
    row = (
        name, f"{parent['accuracy']:.3f}", f"{r['accuracy']:.3f}", f"{alone['accuracy']:.3f}",
        f"{100 * (r['accuracy'] - alone['accuracy']):+.1f}",
        f"{parent['latency_ms']['batch1']['median_ms'] / r['latency_ms']['batch1']['median_ms']:.2f}",
        f"{distill_s / alone['seconds']:.2f}", f"{step['teacher_seconds']:.0f}",
    )  # fmt: skip
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["example", "fashion"])
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--temperature", type=float, default=4.0)
    args = parser.parse_args()
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [
            bench(name, real_datasets.folder(name, work), work, args.alpha, args.temperature)
            for name in args.datasets
        ]
    print(table(rows, HEADER))


if __name__ == "__main__":
    main()
