"""``compression.json``: what a variant costs beside the run it came from, measured together.

A variant's record holds its own figures and its parent's, measured in the same sitting and the
same runtime (see :mod:`studio.compress.measure`), so the comparison of a run with all its
variants needs no re-measuring: :func:`comparison` reads the records.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import StudioError
from ..models.kinds import LoadedRun, model_record
from ..runs import COMPRESSION, WEIGHTS, read_optional, save_json
from .measure import (
    count_macs,
    count_params,
    latencies,
    onnx_runner,
    ort_runtime,
    torch_runner,
    torch_runtime,
    torch_threads,
)

__all__ = [
    "write_report", "read_report", "comparison", "pareto_front", "descendants", "COLUMNS",
    "in_pytorch",
]  # fmt: skip


def zipped_size(path: Path) -> int:
    """Bytes of the file deflated as in a zip (what a download of it weighs)."""
    import zlib

    return len(zlib.compress(path.read_bytes(), 6))


def _figures(latency: dict, model_file: Path, runtime: str, metrics: dict, counts) -> dict:
    """One model's record: its measured latency, file, runtime, accuracy and counts."""
    params, macs = counts
    return {
        "params": params,
        "macs": macs,
        "size_bytes": model_file.stat().st_size,
        "zipped_bytes": zipped_size(model_file),
        "latency_ms": {f"batch{b}": lat.to_dict() for b, lat in latency.items()},
        "runtime": runtime,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
    }


def _pytorch_runner(loaded: LoadedRun) -> tuple:
    """(runner, the file that is the model, numbers) of a PyTorch model: a bfloat16 one as it
    is, a float one as a channels-last copy (the order its bfloat16 variant runs in, so the
    ratio is bfloat16's own)."""
    import torch

    from ..models.bfloat16 import ChannelsLastClassifier, channels_last_copy

    model, numbers = loaded.model, "bfloat16"
    if not isinstance(model, ChannelsLastClassifier):
        model, numbers = channels_last_copy(model, torch.float32), "float32"
    return torch_runner(model), loaded.run_dir / WEIGHTS, numbers


def _counts(loaded: LoadedRun, input_size) -> tuple[int, int] | None:
    """(parameters, MACs) of a PyTorch model; None for a graph run elsewhere (an int8 model
    has its float parent's: quantization changes the cost of each MAC, not their number)."""
    if loaded.kind.write is not None:
        return None
    return count_params(loaded.model), count_macs(loaded.model, input_size)


def _timed(loaded: dict[str, LoadedRun], graphs: dict[str, Path] | None, threads: int) -> dict:
    """Both models timed in turns in one runtime: ``{name: (latency, file, runtime)}``."""
    sizes = {name: tuple(run.preprocess["input_size"]) for name, run in loaded.items()}
    if graphs is not None:
        runners = {name: onnx_runner(graphs[name], threads) for name in loaded}
        measured = latencies(runners, sizes)
        return {name: (measured[name], graphs[name], ort_runtime(threads)) for name in loaded}
    parts = {name: _pytorch_runner(run) for name, run in loaded.items()}
    with torch_threads(threads):
        measured = latencies({name: part[0] for name, part in parts.items()}, sizes)
    return {name: (measured[name], part[1], torch_runtime(threads, part[2]))
            for name, part in parts.items()}  # fmt: skip


def write_report(
    run: Path,
    method: str,
    parent: LoadedRun,
    variant: LoadedRun,
    metrics: dict,
    graphs: dict[str, Path] | None,
    threads: int,
    extra: dict | None = None,
) -> dict:
    """Measure both models, each at its own input size (a student may see smaller pictures
    than its teacher), and write ``compression.json`` (with ``extra`` added): their ONNX graphs
    (``graphs["parent"]``, ``graphs["variant"]``) in ONNX Runtime, or with ``graphs`` None both
    PyTorch models (a bfloat16 variant)."""
    loaded = {"parent": parent, "variant": variant}
    timed = _timed(loaded, graphs, threads)
    sizes = {name: tuple(run.preprocess["input_size"]) for name, run in loaded.items()}
    counts = {"parent": _counts(parent, sizes["parent"])}
    counts["variant"] = _counts(variant, sizes["variant"]) or counts["parent"]
    figures = {name: _figures(*timed[name], metrics[name], counts[name]) for name in loaded}
    record = {
        "method": method,
        "step": model_record(run)["step"],
        **figures["variant"],
        "agreement_with_parent": metrics["agreement"],
        "parent": {"run": parent.run_dir.name, **figures["parent"]},
        **(extra or {}),
    }
    save_json(run / COMPRESSION, record)
    return record


def read_report(run_dir: str | Path) -> dict | None:
    """A variant's record, or None for a run that was not made by compression."""
    record = read_optional(Path(run_dir), COMPRESSION)
    return record if isinstance(record, dict) else None


COLUMNS = (
    "run", "method", "accuracy", "macro_f1", "params", "macs", "size_bytes",
    "batch1_ms", "batch1_spread_ms", "batch32_ms", "runtime",
)  # fmt: skip


def short_label(method: str, step: dict | None) -> str:
    """A few words for a chart: 'original', 'int8', 'pruned 30%'."""
    step = step or {}
    if method == "quantize":
        return str(step.get("to", "int8"))
    if method == "prune" and isinstance(step.get("ratio"), int | float):
        return f"pruned {step['ratio']:.0%}"
    if method == "sparsify" and isinstance(step.get("amount"), int | float):
        return f"{step['amount']:.0%} zeros"
    if method == "distill" and isinstance(step.get("student"), str):
        return f"student {step['student'].removeprefix('tf_').replace('efficientnet_', '')}"
    return method


def in_pytorch(figures: dict) -> bool:
    """Whether a model was timed in PyTorch (a bfloat16 variant and its parent), not ONNX
    Runtime: its latency compares with the others' only roughly, and its row says so."""
    return str(figures.get("runtime", "")).startswith("PyTorch")


def _row(name: str, method: str, figures: dict) -> dict:
    lat = figures["latency_ms"]
    label = short_label(method, figures.get("step"))
    return {
        "run": name,
        "method": method,
        "label": f"{label} (PyTorch)" if in_pytorch(figures) else label,
        **{k: figures[k] for k in ("accuracy", "macro_f1", "params", "macs", "size_bytes")},
        "zipped_bytes": figures.get("zipped_bytes"),
        "batch1_ms": lat["batch1"]["median_ms"],
        "batch1_spread_ms": round(lat["batch1"]["p75_ms"] - lat["batch1"]["p25_ms"], 3),
        "batch32_ms": lat["batch32"]["median_ms"],
        "runtime": figures["runtime"],
        # A distilled student's twin, trained without its teacher on the same split and seed.
        "alone_accuracy": (figures.get("alone") or {}).get("accuracy"),
    }


def comparison(run_dirs: list[str | Path]) -> list[dict]:
    """One row per model and runtime: each variant's parent (once per runtime, as measured
    beside its first variant timed there; not again when it is itself listed, as in a chain)
    and each variant, in the order given. Runs that are not variants are refused plainly."""
    rows, shown = [], set()
    for run_dir in run_dirs:
        record = read_report(run_dir)
        if record is None:
            raise StudioError(
                f"{Path(run_dir).name} was not made by compression (no {COMPRESSION})"
            )
        parent = record["parent"]
        if (parent["run"], in_pytorch(parent)) not in shown:
            shown.add((parent["run"], in_pytorch(parent)))
            # A chain (prune, then quantize): the parent is a variant itself, kept beside it.
            own = read_report(Path(run_dir).parent / parent["run"])
            method, step = (own["method"], own.get("step")) if own else ("original", None)
            rows.append(_row(parent["run"], method, {**parent, "step": step}))
        shown.add((Path(run_dir).name, in_pytorch(record)))
        rows.append(_row(Path(run_dir).name, record["method"], record))
    return rows


def pareto_front(rows: list[dict]) -> list[bool]:
    """Whether each row is on the Pareto front of accuracy (higher) against batch-1 latency
    (lower): no other model is at least as accurate and at least as fast, and better in one."""

    def beats(a: dict, b: dict) -> bool:
        no_worse = a["accuracy"] >= b["accuracy"] and a["batch1_ms"] <= b["batch1_ms"]
        better = a["accuracy"] > b["accuracy"] or a["batch1_ms"] < b["batch1_ms"]
        return no_worse and better

    return [not any(beats(other, row) for other in rows) for row in rows]


def descendants(runs_dir: str | Path, run_name: str) -> list[Path]:
    """The variants made from ``run_name`` among the runs in ``runs_dir``, directly or through
    other variants (a pruned run's int8 variant), oldest first."""
    runs_dir = Path(runs_dir)
    parent_of = {}
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        record = read_report(folder)
        if record is not None and isinstance(record.get("parent"), dict):
            parent_of[folder.name] = record["parent"].get("run")
    found = []
    for name in parent_of:
        seen, up = set(), parent_of[name]
        while up is not None and up not in seen and up != run_name:
            seen.add(up)
            up = parent_of.get(up)
        if up == run_name:
            found.append(runs_dir / name)
    return sorted(found, key=lambda p: p.stat().st_mtime)
