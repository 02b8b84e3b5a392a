"""Helpers shared by the benchmark scripts: the machine's description and a tidy table."""

from __future__ import annotations

import os
import platform

import torch

# The instruction sets that change what compression buys (int8 dot products, bfloat16).
FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "vnni": "VNNI", "avx512_bf16": "AVX-512 BF16",
            "amx_tile": "AMX"}  # fmt: skip


def machine() -> str:
    """The CPU (and which of :data:`FEATURES` it has), the GPU, torch and its threads."""
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        names = [line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
        flags = " (" + ", ".join(v for k, v in FEATURES.items() if k in text) + ")"
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}{flags}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
