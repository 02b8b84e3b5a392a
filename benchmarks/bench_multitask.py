"""Benchmark (issue 12): one model for several tasks against one model per task.

On the multi-task example (``assets/example-tasks``: material, colour) and on Fashion-MNIST as
three questions a picture (``real_datasets.fashion_tasks``: the garment, which way up, a colour
cast; real photos from Debian's ``dataset-fashion-mnist``, the two added questions drawn by a
seeded script), in one run and on the same split: ``studio train CSV --preset P`` once for all
tasks, then ``studio train CSV --tasks T --preset P`` once per task. Each run gets an empty
feature memo (studio.training.feature_memo), so no run reuses another's frozen features: the
times compare a person training one model against one per task. Prints each task's held-out
accuracy both ways and the training time (the runs' own ``Finished`` seconds, without
Python's start-up) of the one model against the sum of the separate ones.

    python benchmarks/bench_multitask.py [--datasets example fashion-tasks] [--presets quick balanced]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import real_datasets  # noqa: E402
from common import machine, table  # noqa: E402

HEADER = ("dataset", "preset", "task", "one model", "one per task", "difference")
TIME_HEADER = ("dataset", "preset", "one model s", "one per task s (sum)", "time ratio")


def train(csv: Path, out: Path, preset: str, tasks: str | None = None) -> tuple[dict, float]:
    """``(metrics, training seconds)`` of one run, with its own empty feature memo."""
    args = [
        sys.executable,
        "-m",
        "studio",
        "train",
        csv,
        "--preset",
        preset,
        "--out",
        out,
        "--json",
    ]
    args += ["--tasks", tasks] if tasks else []
    env = {**os.environ, "STUDIO_FEATURE_MEMO": str(out.parent / f".memo-{out.name}")}
    done = subprocess.run(list(map(str, args)), check=True, capture_output=True, text=True,
                          env=env)  # fmt: skip
    finished = [json.loads(line) for line in done.stdout.splitlines() if '"finished"' in line]
    return json.loads((out / "metrics.json").read_text()), float(finished[-1]["seconds"])


def _example_with_split(dest: Path) -> Path:
    """The multi-task example with its split written into the table (the split the studio
    makes for both tasks), so that a run of one task trains and tests on the same pictures."""
    import shutil

    from studio.data.dataset import load_dataset
    from studio.data.example import multitask_example

    source = multitask_example()
    if not dest.exists():
        shutil.copytree(source, dest)
    split = {
        Path(s.path).relative_to(source.resolve()).as_posix(): name
        for name, part in load_dataset(source).splits.items()
        for s in part
    }
    lines = (source / "labels.csv").read_text().splitlines()
    rows = [f"{lines[0]},split"] + [f"{r},{split[r.split(',')[0]]}" for r in lines[1:]]
    (dest / "labels.csv").write_text("\n".join(rows) + "\n")
    return dest / "labels.csv"


def bench(name: str, work: Path, preset: str) -> tuple[list[tuple], tuple]:
    if name == "example":
        csv = _example_with_split(work / "data" / name)
    else:
        csv = real_datasets.MAKERS[name](work / "data" / name)
    together, seconds = train(csv, work / f"{name}-{preset}-all", preset)
    rows, alone_seconds = [], 0.0
    for task, m in together["tasks"].items():
        alone, s = train(csv, work / f"{name}-{preset}-{task}", preset, task)
        alone_seconds += s
        a, b = m["accuracy"], alone["tasks"][task]["accuracy"]
        rows.append((name, preset, task, f"{a:.3f}", f"{b:.3f}", f"{(a - b) * 100:+.1f} pts"))
        print(rows[-1], flush=True)
    timing = (name, preset, f"{seconds:.1f}", f"{alone_seconds:.1f}",
              f"{alone_seconds / seconds:.2f}x")  # fmt: skip
    print(timing, flush=True)
    return rows, timing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["example", "fashion-tasks"])
    parser.add_argument("--presets", nargs="+", default=["quick", "balanced"])
    args = parser.parse_args()
    print(machine(), flush=True)
    rows, timings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            for preset in args.presets:
                part, timing = bench(name, Path(tmp), preset)
                rows += part
                timings.append(timing)
    print(table(rows, HEADER))
    print(table(timings, TIME_HEADER))


if __name__ == "__main__":
    main()
