"""What a model costs: parameters, multiply-accumulates, file size and measured latency.

Latency is measured, never estimated: a few warm-up calls, then repeated timed calls at a fixed
thread count, reported as the median and the spread between the 25th and 75th percentiles, with
the runtime named. Every variant of a run is timed in the same runtime as its parent, in the
same sitting, so their ratio means something on this machine even when the machine is busy:
ONNX Runtime on the CPU (the runtime a downloaded model runs in), or PyTorch for a bfloat16
variant (which ONNX Runtime cannot run on a CPU), its parent then timed in PyTorch too.

MACs come from PyTorch's own ``FlopCounterMode`` (one multiply-accumulate is two FLOPs), counted
on the float model: quantization changes the cost of each MAC, not their number.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Latency", "count_params", "count_macs", "time_calls", "onnx_latency", "ort_runtime",
    "torch_latency", "torch_runtime",
]  # fmt: skip

BATCHES = (1, 32)


def ort_runtime(threads: int) -> str:
    """The runtime's name as ``compression.json`` gives it."""
    import onnxruntime as ort

    return f"ONNX Runtime {ort.__version__} (CPU, {threads} thread{'s' * (threads != 1)})"


@dataclass(frozen=True)
class Latency:
    """Milliseconds per call at one batch size: the median and the interquartile spread."""

    batch: int
    median_ms: float
    p25_ms: float
    p75_ms: float
    runs: int

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on one picture of ``input_size`` (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_size))
    return int(counter.get_total_flops() // 2)


def time_calls(call: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _summary(batch: int, times: list[float]) -> Latency:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Latency(batch, statistics.median(times), q[0], q[2], len(times))


def _latencies(run_batch: Callable[[np.ndarray], object], input_size, runs, batches, seed):
    """Each batch size's :class:`Latency`: random pictures (the time of these models does not
    depend on what the pictures show), ``runs`` timed calls at batch 1 (default 20, or
    ``STUDIO_TIMED_CALLS``: the test suite asks for 5, as it checks what is measured, not how
    fast), a quarter of them at batch 32."""
    runs = runs or int(os.environ.get("STUDIO_TIMED_CALLS", "20"))
    warmup = 3 if runs >= 10 else 1
    rng = np.random.default_rng(seed)
    out = {}
    for batch in batches:
        x = rng.standard_normal((batch, *input_size), dtype=np.float32)
        n = max(2, runs // 4) if batch > 8 else runs
        out[batch] = _summary(batch, time_calls(lambda x=x: run_batch(x), n, warmup))
    return out


def onnx_latency(
    graph: str | Path,
    input_size: tuple[int, int, int],
    *,
    threads: int = 2,
    runs: int | None = None,
    batches: tuple[int, ...] = BATCHES,
    seed: int = 0,
) -> dict[int, Latency]:
    """Latency of an ONNX file in ONNX Runtime at each batch size (see :func:`_latencies`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _latencies(lambda x: session.run(None, {name: x}), input_size, runs, batches, seed)


def torch_runtime(threads: int, numbers: str) -> str:
    """A PyTorch model's runtime as ``compression.json`` gives it (numbers: 'bfloat16')."""
    return (f"PyTorch {torch.__version__.split('+')[0]} (CPU, {numbers}, channels-last, "
            f"{threads} thread{'s' * (threads != 1)})")  # fmt: skip


def torch_latency(
    model: torch.nn.Module,
    input_size: tuple[int, int, int],
    *,
    threads: int = 2,
    runs: int | None = None,
    batches: tuple[int, ...] = BATCHES,
    seed: int = 0,
) -> dict[int, Latency]:
    """Latency of a PyTorch model (eval mode, no autograd) at each batch size, with PyTorch
    held to ``threads`` threads for the measurement (see :func:`_latencies`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return _latencies(lambda x: model(torch.from_numpy(x)), input_size, runs, batches,
                              seed)  # fmt: skip
    finally:
        torch.set_num_threads(before)
