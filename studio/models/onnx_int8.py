"""The int8 kind: a model quantized to 8-bit integers and run by ONNX Runtime.

ONNX Runtime's static quantization (:mod:`studio.compress.quantize` makes it) leaves an ONNX
graph, ``model.int8.onnx``, not PyTorch weights; this module wraps that graph in a
``torch.nn.Module`` so Evaluate and Predict feed it like any run's model. Gradients do not flow
through ONNX Runtime, so the Explain tab refuses it and names the float run it was made from;
its only export is the ONNX file itself (copied, then checked like any export). The run folder
also keeps the float parent's ``model.safetensors`` (what was quantized; the record says so),
which the download leaves out: the int8 graph is the model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..runs import INT8_GRAPH
from .kinds import ModelKind, register_kind

__all__ = ["OrtClassifier", "INT8"]


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
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def _build(run: Path, record: dict) -> torch.nn.Module:
    return OrtClassifier(run / INT8_GRAPH)


def _write(loaded, fmt: str, target: Path) -> None:
    shutil.copyfile(loaded.run_dir / INT8_GRAPH, target)


INT8 = register_kind(
    ModelKind(
        "onnx-int8",
        _build,
        gradients=False,
        exports=("onnx",),
        why_not="it runs as 8-bit integers in ONNX Runtime, where gradients do not flow; "
        "explain the float run it was made from instead",
        write=_write,
        python_sample=False,
    )
)
