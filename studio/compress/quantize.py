"""int8 post-training quantization with ONNX Runtime, calibrated on the run's training pictures.

Why ONNX Runtime and not PyTorch's own int8: eager ``torch.ao.quantization`` is deprecated, and
PT2E's x86 (Inductor) path needs a compiler at run time, which a teacher's laptop may not have.
ONNX Runtime's static quantization needs nothing but the wheel the studio already uses to check
ONNX exports, and the file it writes is the one the person takes away and runs. Measured on the
example run on a 2-core AVX2 CPU without VNNI: 1.5x faster than the float ONNX model at batch 1
and 1.7x at batch 32 (and about 5x faster than PyTorch eager), 3.5x smaller, same answers on
every held-out picture (``benchmarks/bench_compress.py`` measures it again).

The recipe: the run's float model is exported to ONNX (and checked against PyTorch, as every
export), ONNX Runtime's pre-processing adds shapes and folds what can be folded, then
``quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs (the QDQ format ONNX
Runtime fuses into int8 kernels): weights signed 8-bit per output channel, activations unsigned
8-bit with ranges from min/max calibration on up to ``calibration`` training pictures (a
seeded sample, prepared exactly as for prediction).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from .. import events as ev
from ..data.dataset import Dataset, load_dataset
from ..data.images import open_rgb
from ..deployment.export import export_run
from ..errors import StudioError
from ..inspection.evaluate import evaluate_samples
from ..inspection.model_card import write_model_card
from ..models.kinds import LoadedRun, load_run, save_model
from ..runs import (
    CONFIG,
    DATA_REPORT,
    INT8_GRAPH,
    LABELS,
    METRICS,
    PREPROCESS,
    RUN_INFO,
    SPLIT,
    save_json,
)
from .report import write_report

__all__ = ["quantize_run", "run_dataset", "new_run_folder"]

COPIED = (CONFIG, DATA_REPORT, SPLIT, LABELS, PREPROCESS, RUN_INFO)  # the parent's, unchanged


def run_dataset(loaded: LoadedRun) -> Dataset:
    """The parent run's pictures, split exactly as when it was trained (its settings say how)."""
    cfg = loaded.config
    return load_dataset(
        cfg["data"],
        val_fraction=cfg.get("val_fraction", 0.15),
        test_fraction=cfg.get("test_fraction", 0.15),
        seed=cfg.get("seed", 0),
    )


def new_run_folder(parent: Path, out: str | Path) -> Path:
    """An empty folder for a variant, with the parent's settings, labels and split copied in.
    An existing non-empty folder is refused: nothing the person made is overwritten."""
    out = Path(out)
    if out.resolve() == parent.resolve():
        raise StudioError("the variant needs a folder of its own, not the run it comes from")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StudioError(f"{out} already exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (parent / name).is_file():
            shutil.copyfile(parent / name, out / name)
    return out


def _calibration_batches(loaded: LoadedRun, dataset: Dataset, count: int, seed: int):
    """Up to ``count`` training pictures (seeded sample), one array each, as prediction sees them."""
    samples = list(dataset.train)
    random.Random(seed).shuffle(samples)
    transform = loaded.transform()
    for sample in samples[:count]:
        yield {"image": transform(open_rgb(sample.path)).unsqueeze(0).numpy()}


def _quantize_graph(float_graph: Path, target: Path, batches, scratch: Path) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            return next(self.items, None)

    prepared = scratch / "prepared.onnx"
    quant_pre_process(str(float_graph), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def quantize_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    calibration: int = 64,
    seed: int = 0,
    threads: int = 2,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[ev.Event]:
    """Quantize a run's model to int8 into a new run folder ``out``; yields what it is doing.

    The new run holds ``model.int8.onnx`` (kind ``onnx-int8``), the parent's float weights it
    was made from, ``metrics.json`` on the parent's held-out pictures and ``compression.json``
    with both models measured in this sitting. Stopping before the end removes the new folder.
    """
    start = time.perf_counter()
    parent = load_run(run_dir)
    if parent.kind.write is not None or not parent.kind.gradients:
        raise StudioError(f"{parent.run_dir.name} is already {parent.kind.a_model}")
    if not 1 <= calibration <= 10_000:
        raise StudioError("calibration needs between 1 and 10000 pictures")
    dataset = run_dataset(parent)
    run = new_run_folder(parent.run_dir, out)
    try:
        yield ev.Notice(f"exporting {parent.run_dir.name} to ONNX and checking it")
        with tempfile.TemporaryDirectory(prefix="studio-quantize-") as tmp:
            scratch = Path(tmp)
            float_graph = scratch / "float.onnx"
            export_run(parent, "onnx", out=float_graph)
            if should_stop():
                raise _Stopped
            yield ev.Notice(f"calibrating int8 ranges on {calibration} training pictures")
            batches = _calibration_batches(parent, dataset, calibration, seed)
            _quantize_graph(float_graph, run / INT8_GRAPH, batches, scratch)
            step = {"name": "quantize", "to": "int8", "calibration": calibration, "seed": seed}
            save_model(
                run, parent.model, backbone=parent.record.get("backbone", parent.config["backbone"]),
                num_classes=len(parent.labels), kind="onnx-int8", parent=parent.run_dir.name,
                step=step,
            )  # fmt: skip
            if should_stop():
                raise _Stopped
            yield ev.Notice("measuring accuracy, size and speed of both models")
            metrics = _evaluate_both(parent, load_run(run), dataset)
            save_json(run / METRICS, metrics["variant"])
            write_report(run, parent, metrics, float_graph, threads)
        write_model_card(run)
    except _Stopped as stopped:
        shutil.rmtree(run, ignore_errors=True)
        yield ev.Stopped(str(stopped), 0)
        return
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise
    yield ev.Finished(str(run), metrics["variant"], 0, time.perf_counter() - start)


class _Stopped(StudioError):
    def __init__(self):
        super().__init__("stopped before the end; nothing was kept")


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
