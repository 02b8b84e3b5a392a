"""Models run by ONNX Runtime: int8 (quantized) and fp16 (half-precision) graphs.

Compression's number formats (:mod:`studio.compress.quantize` makes them) leave an ONNX graph,
``model.int8.onnx`` or ``model.fp16.onnx``, not PyTorch weights; this module wraps that graph
in a ``torch.nn.Module`` so Evaluate and Predict feed it like any run's model. Gradients do not
flow through ONNX Runtime, so the Explain tab refuses it and names the float run it was made
from; its only export is the ONNX file itself (copied, then checked like any export). The run
folder also keeps the float parent's ``model.safetensors`` (what was converted; the record says
so), which the download leaves out: the graph is the model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..runs import FP16_GRAPH, INT8_GRAPH
from .kinds import ModelKind, register_kind

__all__ = ["OrtClassifier", "INT8", "FP16", "GRAPH_FILES"]


class OrtClassifier(torch.nn.Module):
    """An ONNX Runtime session behind a module's ``forward``: images in, logits out (CPU)."""

    def __init__(self, graph: str | Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.graph = Path(graph)
        self.session = ort.InferenceSession(
            str(self.graph), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0]).float()


def _graph_kind(name: str, graph_file: str, numbers: str) -> ModelKind:
    """A kind whose model is the ONNX graph ``graph_file`` in the run folder."""

    def build(run: Path, record: dict) -> torch.nn.Module:
        return OrtClassifier(run / graph_file)

    def write(loaded, fmt: str, target: Path) -> None:
        shutil.copyfile(loaded.run_dir / graph_file, target)

    return register_kind(
        ModelKind(
            name,
            build,
            gradients=False,
            exports=("onnx",),
            why_not=f"it runs as {numbers} in ONNX Runtime, where gradients do not flow; "
            "explain the float run it was made from instead",
            write=write,
            python_sample=False,
        )
    )


INT8 = _graph_kind("onnx-int8", INT8_GRAPH, "8-bit integers")
FP16 = _graph_kind("onnx-fp16", FP16_GRAPH, "16-bit floating-point numbers")
GRAPH_FILES = {"onnx-int8": INT8_GRAPH, "onnx-fp16": FP16_GRAPH}
