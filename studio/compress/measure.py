"""What a model costs: parameters, multiply-accumulates, file size and measured latency.

Latency is measured, never estimated: a few warm-up calls, then repeated timed calls at a fixed
thread count, reported as the median and the spread between the 25th and 75th percentiles, with
the runtime named. Every variant of a run is timed in the same runtime as its parent, in the
same sitting and in turns with it, so their ratio means something on this machine even when the
machine is busy or still warming up:
ONNX Runtime on the CPU (the runtime a downloaded model runs in), or PyTorch for a bfloat16
variant (which ONNX Runtime cannot run on a CPU), its parent then timed in PyTorch too.

MACs come from PyTorch's own ``FlopCounterMode`` (one multiply-accumulate is two FLOPs), counted
on the float model: quantization changes the cost of each MAC, not their number.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Latency", "count_params", "count_macs", "time_together", "latencies",
    "onnx_runner", "torch_runner", "torch_threads", "ort_runtime", "torch_runtime",
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


def time_together(
    calls: dict[str, Callable[[], object]], runs: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Milliseconds of ``runs`` calls of each, taken in turns (a, b, b, a, a, b...), after
    ``warmup`` untimed turns. Taking turns matters: a process gets faster over its first
    seconds of work (measured here: the same bfloat16 model at 14.8 ms a call first, 10 ms
    later), so whichever model was timed first would look slower."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def _summary(batch: int, times: list[float]) -> Latency:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Latency(batch, statistics.median(times), q[0], q[2], len(times))


Runner = Callable[[np.ndarray], object]  # one batch of pictures in, the answers out


def latencies(
    runners: dict[str, Runner],
    input_sizes: dict[str, tuple[int, int, int]],
    *,
    runs: int | None = None,
    batches: tuple[int, ...] = BATCHES,
    seed: int = 0,
) -> dict[str, dict[int, Latency]]:
    """Each model's :class:`Latency` at each batch size, the models timed in turns (see
    :func:`time_together`) on random pictures of their own input size (the time of these
    models does not depend on what the pictures show): ``runs`` timed calls at batch 1
    (default 20, or ``STUDIO_TIMED_CALLS``: the test suite asks for 5, as it checks what is
    measured, not how fast), a quarter of them at batch 32, after a warm-up of 10 calls at
    batch 1 and 3 at batch 32 (1 in the test suite)."""
    runs = runs or int(os.environ.get("STUDIO_TIMED_CALLS", "20"))
    rng = np.random.default_rng(seed)
    out: dict[str, dict[int, Latency]] = {name: {} for name in runners}
    for batch in batches:
        inputs = {name: rng.standard_normal((batch, *input_sizes[name]), dtype=np.float32)
                  for name in runners}  # fmt: skip
        calls = {name: (lambda r=run, x=inputs[name]: r(x)) for name, run in runners.items()}
        n = max(2, runs // 4) if batch > 8 else runs
        warmup = (3 if batch > 8 else 10) if runs >= 10 else 1
        for name, times in time_together(calls, n, warmup).items():
            out[name][batch] = _summary(batch, times)
    return out


def onnx_runner(graph: str | Path, threads: int) -> Runner:
    """An ONNX file in ONNX Runtime on the CPU with ``threads`` threads, ready to time."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def torch_runner(model: torch.nn.Module) -> Runner:
    """A PyTorch model (eval mode, no autograd), ready to time; hold PyTorch's threads with
    :func:`torch_threads` while timing it."""

    def run(x: np.ndarray):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    return run


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch held to ``threads`` threads for a measurement, then given back its own count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_runtime(threads: int, numbers: str) -> str:
    """A PyTorch model's runtime as ``compression.json`` gives it (numbers: 'bfloat16')."""
    return (f"PyTorch {torch.__version__.split('+')[0]} (CPU, {numbers}, channels-last, "
            f"{threads} thread{'s' * (threads != 1)})")  # fmt: skip
