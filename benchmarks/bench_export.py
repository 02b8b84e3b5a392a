"""Benchmark: building the download (every format exported, zipped, checked as received).

Baseline, in the same run: each format exported on its own with ``export_run`` (each one
traces the model and runs the check pictures through it again), then the download built from
those (it only zips and checks them); against ``build_package`` as the app runs it on a run
with no exports yet (one trace for ONNX and pt2, the model's answers computed once, the
checking Python started before the exports, its imports overlapping them). Both start from a
copy of one trained run of the example without exports, in turns. Also reports the size of
``model.pt2`` (it once carried the check pictures as its sample inputs).

    python benchmarks/bench_export.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, table  # noqa: E402

from studio.data.example import example_dataset  # noqa: E402
from studio.deployment.export import FILE_NAMES, FORMATS, export_run, load_run  # noqa: E402
from studio.deployment.package import build_package  # noqa: E402
from studio.runs import EXPORTS  # noqa: E402
from studio.training.train import TrainConfig, run_training  # noqa: E402


def fresh_copy(run: Path, where: Path) -> Path:
    """The trained run without any export, in a folder of its own."""
    copy = where / run.name
    shutil.copytree(run, copy)
    for name in [*FILE_NAMES.values(), EXPORTS, f"{run.name}.zip"]:
        (copy / name).unlink(missing_ok=True)
    return copy


def one_by_one(run: Path) -> bool:
    """The baseline: every format on its own, then the download (which finds them checked and
    only zips and checks them, its checking Python started with nothing left to overlap)."""
    loaded = load_run(run)
    for fmt in FORMATS:
        export_run(loaded, fmt)
    return build_package(run).all_passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(tmp) / "trained"
        run_training(TrainConfig(data=str(example_dataset()), out=str(trained), epochs=2,
                                 augment="none"))  # fmt: skip
        rows, times = [], {"one by one": [], "build_package": []}
        for i in range(args.rounds):
            for name in times if i % 2 == 0 else list(times)[::-1]:  # in turns
                run = fresh_copy(trained, Path(tempfile.mkdtemp(dir=tmp)))
                start = time.perf_counter()
                passed = one_by_one(run) if name == "one by one" else build_package(run).all_passed
                times[name].append(time.perf_counter() - start)
                assert passed, f"{name}: the zip did not pass its check"
                pt2 = (run / FILE_NAMES["pt2"]).stat().st_size / 1e6
                rows.append((i + 1, name, f"{times[name][-1]:.1f} s", f"{pt2:.1f} MB"))
        print(table(rows, ("round", "how", "seconds", "model.pt2")))
        base, now = (min(times[k]) for k in ("one by one", "build_package"))
        print(f"build_package: {now:.1f} s, one by one: {base:.1f} s: {base / now:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
