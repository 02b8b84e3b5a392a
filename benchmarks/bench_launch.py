"""Benchmark: seconds from ``python launch.py`` to the page answering (target: under 10 s).

The baseline, measured in the same run, is a bare Gradio "hello" app started the same way, so
the ratio shows what Transfer Studio itself adds on top of Gradio's own start-up.

    python benchmarks/bench_launch.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HELLO = """
import gradio as gr, sys
with gr.Blocks() as demo:
    gr.Markdown("hello")
demo.launch(server_port=int(sys.argv[1]))
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seconds_to_answer(command: list[str], port: int) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                return time.perf_counter() - start
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"{command} exited early") from None
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    studio, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            port = _port()
            studio.append(
                seconds_to_answer(
                    [sys.executable, "launch.py", "--port", str(port), "--workspace", tmp], port
                )
            )
            port = _port()
            bare.append(seconds_to_answer([sys.executable, "-c", HELLO, str(port)], port))
    print(f"machine: {machine()}")
    print(
        table(
            [
                ("python launch.py (Transfer Studio)", f"{min(studio):.1f}"),
                ("bare Gradio app", f"{min(bare):.1f}"),
            ],
            (f"start-up, best of {args.rounds}", "seconds"),
        )
    )
    print(
        f"studio / bare Gradio: {min(studio) / min(bare):.2f}x; "
        f"studio {'meets' if min(studio) < 10 else 'misses'} the 10 s target"
    )


if __name__ == "__main__":
    main()
