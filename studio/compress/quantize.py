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

Two settings keep the accuracy, both measured on Fashion-MNIST (the default run, 0.816): on a
CPU without VNNI, ONNX Runtime multiplies unsigned by signed 8-bit numbers and adds pairs in
16 bits, which can saturate; ``reduce_range`` (7-bit weights) avoids it, and keeping the first
convolution (864 weights, the one that sees the pixels) in float finishes the job: 0.764 with
neither, 0.792 with the first, 0.801 with both, at the same size and speed. Percentile or
entropy calibration, more calibration pictures, or a float classifier did not help (0.762-0.764).
With VNNI, ``reduce_range`` is left off, as ONNX Runtime advises.

Two other number formats, both from the same float graph (``to``):

- ``int8-dynamic``: ONNX Runtime's dynamic quantization (weights int8 ahead of time,
  activations quantized on the fly; no calibration) of the matrix products (``MatMul``,
  ``Gemm``), where it applies: linear layers, which are a vision transformer's bulk and a
  convolutional network's classifier alone. Convolutions are left in float because dynamic
  int8 convolutions are slower than float ones here (``ConvInteger``: 4.2x slower with
  unsigned weights, 15x with signed ones, on the example run); so on the catalog's
  convolutional networks the dynamic variant is close to the original, and the table says so.
- ``fp16``: every weight and activation in 16-bit floating point (ONNX Runtime's converter,
  inputs and outputs kept 32-bit so the same pictures go in): half the file, the same answers,
  and *slower* on a CPU without 16-bit arithmetic (measured 1.4x slower here); GPUs and phones
  with fp16 units run it faster. The table shows the measured figure, never the hoped-for one.

- ``bf16``: weights and arithmetic in bfloat16 (float32's range, an 8-bit mantissa), run by
  PyTorch (:mod:`studio.models.bfloat16`): ONNX Runtime's CPU provider has no bfloat16
  convolutions. Offered only on a CPU that computes bfloat16 natively (AVX-512 BF16 or AMX):
  elsewhere PyTorch emulates it and it would be slower, so ``--to bf16`` is refused in one
  sentence. Half the file, no calibration; it and its parent are timed in PyTorch (float32,
  channels-last, the same threads), so the ratio is bfloat16's own gain.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import events as ev
from ..data.dataset import Dataset
from ..data.loaders import prepared
from ..errors import StudioError
from ..models.bfloat16 import bf16_fast_here, channels_last_copy
from ..models.kinds import LoadedRun, save_model
from ..models.onnx_graph import GRAPH_FILES
from .variant import (
    Stopped,
    finish,
    float_parent,
    parent_graph,
    training_sample,
    variant_folder,
)

__all__ = ["quantize_run", "FORMATS", "formats_here", "BF16_REFUSED"]

# --to: the kind of model each number format makes, and what the step says it is.
FORMATS = {
    "int8": "onnx-int8", "int8-dynamic": "onnx-int8", "fp16": "onnx-fp16", "bf16": "torch-bf16",
}  # fmt: skip
BF16_REFUSED = (
    "bf16 needs a CPU that computes bfloat16 natively (AVX-512 BF16 or AMX) and this one does "
    "not: PyTorch would emulate it and the model would get slower; choose int8 (faster here) or "
    "fp16 (half the file)"
)


def _calibration_batches(loaded: LoadedRun, dataset: Dataset, count: int, seed: int):
    """Up to ``count`` training pictures (seeded sample), one array each, as prediction sees them."""
    transform = loaded.transform()
    for sample in training_sample(dataset, count, seed):
        yield {"image": prepared(sample.path, transform).unsqueeze(0).numpy()}


def _quantize_graph(float_graph: Path, target: Path, batches, scratch: Path) -> dict:
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
    settings = int8_settings(prepared)
    quantize_static(
        str(prepared),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=settings["reduce_range"],
        nodes_to_exclude=settings["float_layers"],
    )
    return settings


def _dynamic_graph(float_graph: Path, target: Path, scratch: Path) -> dict:
    """Dynamic int8 of the matrix products (see the module docstring for why not convolutions)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = scratch / "prepared.onnx"
    quant_pre_process(str(float_graph), str(prepared), skip_symbolic_shape=True)
    ops = ["MatMul", "Gemm"]
    quantize_dynamic(str(prepared), str(target), op_types_to_quantize=ops,
                     weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=not has_vnni())  # fmt: skip
    return {"quantized_ops": ops, "reduce_range": not has_vnni()}


def _fp16_graph(float_graph: Path, target: Path) -> dict:
    """Weights and activations in 16-bit floats; inputs and outputs stay 32-bit."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(float_graph)), keep_io_types=True)
    onnx.save(model, str(target))
    return {"io": "float32"}


def has_vnni() -> bool:
    """Whether this CPU has the VNNI dot-product instructions (AVX-512 VNNI or AVX-VNNI)."""
    try:
        return "vnni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: take the safe setting


def int8_settings(graph: Path) -> dict:
    """What stays careful in the int8 graph, and why (measured, see the module docstring)."""
    import onnx

    convs = [n.name for n in onnx.load(str(graph)).graph.node if n.op_type == "Conv"]
    return {"reduce_range": not has_vnni(), "float_layers": convs[:1]}


def _convert(to, float_graph, target, scratch, parent, dataset, calibration, seed):
    """Write the graph in format ``to``; yields a note, returns the step's record."""
    if to == "int8":
        yield ev.Notice(f"calibrating int8 ranges on {calibration} training pictures")
        batches = _calibration_batches(parent, dataset, calibration, seed)
        how = _quantize_graph(float_graph, target, batches, scratch)
        return {"name": "quantize", "to": to, "calibration": calibration, "seed": seed, **how}
    yield ev.Notice(f"converting the graph to {to}")
    if to == "fp16":
        how = _fp16_graph(float_graph, target)
    else:
        how = _dynamic_graph(float_graph, target, scratch)
    return {"name": "quantize", "to": to, **how}


def formats_here() -> list[str]:
    """The number formats this machine can make (bf16 only where it is faster: see above)."""
    return [to for to in FORMATS if to != "bf16" or bf16_fast_here()]


def _save_graph(parent, run, to, scratch, dataset, calibration, seed, should_stop):
    """An ONNX Runtime variant: the parent's checked float graph, converted; yields notes,
    returns the step's record."""
    yield ev.Notice(f"exporting {parent.run_dir.name} to ONNX and checking it")
    float_graph = parent_graph(parent)
    if should_stop():
        raise Stopped
    kind = FORMATS[to]
    step = yield from _convert(to, float_graph, run / GRAPH_FILES[kind], scratch, parent,
                               dataset, calibration, seed)  # fmt: skip
    save_model(
        run, parent.model, backbone=parent.record.get("backbone", parent.config["backbone"]),
        num_classes=len(parent.labels), kind=kind, parent=parent.run_dir.name, step=step,
    )  # fmt: skip
    return step


def _save_bf16(parent: LoadedRun, run: Path):
    """A PyTorch bfloat16 variant, built on the parent's own kind (a pruned model's widths
    travel in the record); yields a note, returns the step's record."""
    import torch

    yield ev.Notice("converting the weights to bfloat16")
    model = channels_last_copy(parent.model, torch.bfloat16).model
    own = {k: v for k, v in parent.record.items()
           if k not in ("kind", "backbone", "num_classes", "parent", "step")}  # fmt: skip
    step = {"name": "quantize", "to": "bf16"}
    save_model(
        run, model, backbone=parent.record.get("backbone", parent.config["backbone"]),
        num_classes=len(parent.labels), kind=FORMATS["bf16"], parent=parent.run_dir.name,
        step=step, extra={**own, "base": parent.record.get("kind", "timm")},
    )  # fmt: skip
    return step


def quantize_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    to: str = "int8",
    calibration: int = 64,
    seed: int = 0,
    threads: int = 2,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[ev.Event]:
    """Convert a run's model to the number format ``to`` (:data:`FORMATS`) into a new run
    folder ``out``; yields what it is doing.

    The new run holds the model (an ONNX graph, ``model.int8.onnx`` of kind ``onnx-int8`` or
    ``model.fp16.onnx`` of kind ``onnx-fp16``, beside the parent's float weights it was made
    from; or bfloat16 weights, kind ``torch-bf16``), ``metrics.json`` on the parent's held-out
    pictures and ``compression.json`` with both models measured in this sitting. Stopping
    before the end removes the new folder.
    """
    start = time.perf_counter()
    parent = float_parent(run_dir)
    if to not in FORMATS:
        raise StudioError(f"unknown number format {to!r}; choose {', '.join(FORMATS)}")
    if to not in formats_here():
        raise StudioError(BF16_REFUSED)
    if not 1 <= calibration <= 10_000:
        raise StudioError("calibration needs between 1 and 10000 pictures")
    dataset = parent.dataset()
    try:
        with variant_folder(parent, out) as run, tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            if to == "bf16":
                yield from _save_bf16(parent, run)
            else:
                yield from _save_graph(parent, run, to, scratch, dataset, calibration, seed,
                                       should_stop)  # fmt: skip
            if should_stop():
                raise Stopped
            yield ev.Notice("measuring accuracy, size and speed of both models")
            runtime = "pytorch" if to == "bf16" else "onnx"
            metrics = finish(run, "quantize", parent, dataset, scratch, threads, runtime=runtime)
    except Stopped as stopped:
        yield ev.Stopped(str(stopped), 0)
        return
    yield ev.Finished(str(run), metrics, 0, time.perf_counter() - start)
