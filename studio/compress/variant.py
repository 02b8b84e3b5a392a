"""What every way of making a variant shares: its folder, its data, and how it is finished.

A variant is a run folder of its own: the parent's settings, labels and split are copied in
(:func:`new_run_folder`), the method saves its model there by kind, and :func:`finish` evaluates
it and its parent on the parent's held-out pictures, measures both in the same sitting and the
same runtime (:mod:`studio.compress.report`), and writes ``metrics.json``, ``compression.json``
and the model card. A method that fails or is stopped leaves no folder behind
(:func:`variant_folder`).
"""

from __future__ import annotations

import contextlib
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import Dataset
from ..deployment.export import FILE_NAMES, checked_exports, export_run
from ..errors import StudioError
from ..inspection.evaluate import evaluate_samples
from ..inspection.model_card import write_model_card
from ..models.kinds import LoadedRun, load_run
from ..runs import (
    CONFIG,
    DATA_REPORT,
    LABELS,
    METRICS,
    PREPROCESS,
    RUN_INFO,
    SPLIT,
    require_empty_folder,
    save_json,
)
from .report import write_report

__all__ = [
    "COPIED", "Stopped", "float_parent", "new_run_folder", "variant_folder",
    "parent_graph", "finish", "training_sample", "classifier_of", "remove_new_folder",
]  # fmt: skip

COPIED = (CONFIG, DATA_REPORT, SPLIT, LABELS, PREPROCESS, RUN_INFO)  # the parent's, unchanged


class Stopped(StudioError):
    """Raised inside a method when the person stopped it before there was anything to keep."""

    def __init__(self):
        super().__init__("stopped before the end; nothing was kept")


def float_parent(run_dir: str | Path) -> LoadedRun:
    """The run to make a variant of: a PyTorch model (not already an int8 graph)."""
    parent = load_run(run_dir)
    if parent.kind.write is not None or not parent.kind.gradients:
        raise StudioError(f"{parent.run_dir.name} is already {parent.kind.a_model}")
    if parent.tasks is not None:
        raise StudioError(single_task_only("compression", parent))
    return parent


def single_task_only(what: str, run: LoadedRun) -> str:
    """Why ``what`` refuses a multi-task run (its variants would lose the named outputs and the
    per-task metrics; not built yet)."""
    names = ", ".join(run.tasks.names) if run.tasks else ""
    return (
        f"{what} works on single-task runs for now; {run.run_dir.name} has several tasks ({names})"
    )


def training_sample(dataset: Dataset, count: int, seed: int) -> list:
    """Up to ``count`` training pictures, a seeded sample (int8 calibration, Taylor gradients)."""
    samples = list(dataset.train)
    random.Random(seed).shuffle(samples)
    return samples[:count]


def classifier_of(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's classifier (left alone by pruning: its outputs are the classes), if any."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return head if isinstance(head, torch.nn.Module) else None


def new_run_folder(parent: Path, out: str | Path) -> Path:
    """An empty folder for a variant, with the parent's settings, labels and split copied in.
    An existing non-empty folder is refused: nothing the person made is overwritten."""
    out = Path(out)
    if out.resolve() == parent.resolve():
        raise StudioError("the variant needs a folder of its own, not the run it comes from")
    require_empty_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (parent / name).is_file():
            shutil.copyfile(parent / name, out / name)
    return out


def remove_new_folder(run: Path) -> None:
    """Remove a variant's folder that a failed or stopped method made (never the parent's)."""
    shutil.rmtree(run, ignore_errors=True)


@contextlib.contextmanager
def variant_folder(parent: LoadedRun, out: str | Path) -> Iterator[Path]:
    """The variant's new folder, removed again if the method fails or is stopped."""
    run = new_run_folder(parent.run_dir, out)
    try:
        yield run
    except BaseException:
        remove_new_folder(run)
        raise


def parent_graph(parent: LoadedRun) -> Path:
    """The parent's float ONNX graph: its checked ``model.onnx`` when it has one still valid,
    else exported (and checked) into the parent's folder now, as the Export tab would, so the
    next variant of the same run reuses it."""
    if "onnx" not in checked_exports(parent.run_dir):
        export_run(parent, "onnx")
    return parent.run_dir / FILE_NAMES["onnx"]


def _evaluate_both(parent: LoadedRun, variant: LoadedRun, dataset: Dataset) -> dict:
    """Both models on the parent's held-out pictures, and how often they give the same answer."""
    split, samples = dataset.held_out()
    out = {}
    for name, loaded in (("parent", parent), ("variant", variant)):
        out[name] = evaluate_samples(
            loaded.model, samples, loaded.transform(), loaded.labels, loaded.multilabel,
            torch.device("cpu"), threshold=loaded.threshold, split=split,
        )  # fmt: skip
    said = {
        name: {p["path"]: p["predicted"] for p in m.get("predictions", [])}
        for name, m in out.items()
    }
    same = [said["variant"].get(path) == answer for path, answer in said["parent"].items()]
    out["agreement"] = float(np.mean(same)) if same else None
    return out


def _variant_graph(variant: LoadedRun, scratch: Path) -> Path:
    """The variant's ONNX graph to time. A model that PyTorch runs (pruned, distilled) is
    exported into its own folder and checked there, as the Export tab would do: its download
    then reuses it instead of exporting it again. A variant that already is a graph (int8,
    fp16) is copied to ``scratch`` for the timing alone."""
    if variant.kind.write is None:
        export_run(variant, "onnx")
        return variant.run_dir / FILE_NAMES["onnx"]
    target = scratch / "variant.onnx"
    export_run(variant, "onnx", out=target)
    return target


def finish(
    run: Path,
    method: str,
    parent: LoadedRun,
    dataset: Dataset,
    scratch: Path,
    threads: int,
    extra: dict | None = None,
    runtime: str = "onnx",
) -> dict:
    """Evaluate, measure and describe a saved variant; returns its metrics.

    Both models are timed in one runtime: as ONNX graphs in ONNX Runtime (``runtime="onnx"``:
    the parent's float graph and the variant's, a copy of its int8 graph or its float graph
    exported here and checked), or as PyTorch models (``"pytorch"``: a bfloat16 variant, which
    ONNX Runtime cannot run). ``extra`` is added to ``compression.json`` (a distilled
    student's twin trained alone)."""
    variant = load_run(run)
    metrics = _evaluate_both(parent, variant, dataset)
    save_json(run / METRICS, metrics["variant"])
    graphs = None
    if runtime == "onnx":
        graphs = {"parent": parent_graph(parent), "variant": _variant_graph(variant, scratch)}
    write_report(run, method, parent, variant, metrics, graphs, threads, extra)
    write_model_card(run)
    return metrics["variant"]
