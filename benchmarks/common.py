"""Helpers shared by the benchmark scripts: the machine's description, a tidy table, and a
command's time and peak memory."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

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


def measured(argv: list[str], cwd: Path, env: dict) -> tuple[float, float, int, str]:
    """``(seconds, peak MB, exit status, stderr's end)`` of a command in a fresh process.

    The peak is the largest resident set of the command and the processes it waited for
    (worker processes included), as ``wait4`` reports it, but taken under ``/usr/bin/time``
    where there is one: Linux carries a process's peak across ``exec``, so a command started
    straight from this script (which has torch loaded, 500-600 MB) never showed less than this
    script's own size (every ``studio data`` measured 617 MB flat before this was found)."""
    timer = os.path.exists("/usr/bin/time")  # GNU time (Debian's "time" package)
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        prefix = ["/usr/bin/time", "-f", "%M", "-o", str(peak_file)] if timer else []
        with tempfile.TemporaryFile() as log:  # a file, not a pipe: progress never blocks
            start = time.perf_counter()
            child = subprocess.Popen([*prefix, *argv], cwd=cwd, env=env,
                                     stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
            _, status, usage = os.wait4(child.pid, 0)
            seconds = time.perf_counter() - start
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
        peak_kb = int(peak_file.read_text().split()[-1]) if timer else usage.ru_maxrss
    return seconds, peak_kb / 1024, os.waitstatus_to_exitcode(status), tail
