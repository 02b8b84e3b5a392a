"""``studio train --devices N``: start N training processes with PyTorch's torchrun.

The processes are torchrun's (``torch.distributed.run``, the launcher PyTorch ships), not a
home-made pool: each is ``python -m studio train ...`` with ``RANK``/``WORLD_SIZE`` set, and
:mod:`studio.training.distributed` does the rest. Running torchrun by hand does the same (and
is the way to use several machines; see the README):

    torchrun --standalone --nproc-per-node 2 -m studio train DATA --out RUN

What this module adds around torchrun is what a person at a terminal expects:

- **Ctrl-C stops cleanly.** torchrun runs in its own session, so the terminal's Ctrl-C reaches
  this process alone, which asks the workers to stop through a file they check after every
  batch (``STUDIO_STOP_FILE``): they agree on the step, finish it and keep the best epoch. A
  second Ctrl-C ends them at once.
- **A worker that dies ends the run with one line**, not torchrun's report: which process, how
  it ended; the finished epochs stay in the run folder's checkpoint (``--resume``).
- **Threads**: on a CPU the N processes share its cores (torchrun would give each one thread).

``python -m studio.training.torchrun ARGS`` is torchrun itself with that one-line failure
message; :func:`launch` starts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["launch", "stream_events", "STOP_FILE", "StopFileFlag"]

STOP_FILE = "STUDIO_STOP_FILE"


class StopFileFlag:
    """A stop flag (``is_set``) raised by a threading event or by the launcher's stop file."""

    def __init__(self, event: threading.Event, path: str | None = None):
        self.event, self.path = event, Path(path) if path else None

    def is_set(self) -> bool:
        return self.event.is_set() or (self.path is not None and self.path.exists())


def launch(studio_args: list[str], devices: int, threads: int | None = None) -> int:
    """Run ``studio <studio_args>`` in ``devices`` processes on this machine through torchrun
    and wait for them; returns the exit status (0 when every process finished)."""
    workdir = Path(tempfile.mkdtemp(prefix="studio-run-"))
    stop_file = workdir / "stop"
    env = {**os.environ, STOP_FILE: str(stop_file), "LOGLEVEL": "ERROR"}
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // devices)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    command = [sys.executable, "-m", "studio.training.torchrun", "--standalone",
               "--nproc-per-node", str(devices), "-m", "studio", *studio_args]  # fmt: skip
    child = subprocess.Popen(command, env=env, start_new_session=True)
    asked = []

    def on_interrupt(signum, frame):
        if asked:  # the second Ctrl-C: end them now
            os.killpg(child.pid, signal.SIGTERM)
            return
        asked.append(True)
        stop_file.touch()
        print("\nstopping after this batch (press Ctrl-C again to abort)...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        stop_file.unlink(missing_ok=True)
        workdir.rmdir()


def stream_events(config, devices: int, stop) -> Iterator:
    """The events of ``config``'s run trained in ``devices`` processes (``studio train
    --devices``, started here with the settings as made): how the app trains on several GPUs.
    ``stop`` (a threading.Event) stops every process after the same batch, as Ctrl-C does;
    a run that fails raises a StudioError with the command's own one-line message."""
    import json

    from .. import events as ev
    from ..errors import StudioError

    with tempfile.TemporaryDirectory(prefix="studio-devices-") as work:
        settings = Path(work) / "config.json"
        settings.write_text(json.dumps(config.to_dict()))
        errors = open(Path(work) / "stderr.txt", "w+")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "studio", "train", config.data, "--config",
                   str(settings), "--devices", str(devices), "--json", "--all-events"]  # fmt: skip
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True,
                                 start_new_session=True)  # fmt: skip
        watcher = threading.Thread(target=_pass_on_stop, args=(child, stop), daemon=True)
        watcher.start()
        try:
            for line in child.stdout:
                if line.startswith("{"):
                    yield ev.from_dict(json.loads(line))
            if child.wait() != 0:
                errors.seek(0)
                said = [x for x in errors.read().splitlines() if x.startswith("error: ")]
                raise StudioError(said[0][7:] if said else "training stopped with an error")
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
            errors.close()


def _pass_on_stop(child: subprocess.Popen, stop) -> None:
    """Ctrl-C for ``child`` when ``stop`` is set (it asks its processes to stop cleanly)."""
    while child.poll() is None:
        if stop.wait(0.5):
            child.send_signal(signal.SIGINT)
            return


def _failure_line(error) -> str:
    """One line for torchrun's ChildFailedError: the first process to fail and how."""
    rank, failure = error.get_first_failure()
    code = failure.exitcode
    if code < 0:
        try:
            how = f"was ended by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"was ended by signal {-code}"
    else:
        how = f"stopped with exit status {code}"
    return f"training process {rank} {how}; the other processes were stopped"


def main(argv: list[str] | None = None) -> int:
    """torchrun with its failure report folded into one line (exit status 1, or the failed
    process's own status when it reported a problem itself, such as 2 for bad input)."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun's own log lines (which process got which signal) say what the line below says.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv))
    except ChildFailedError as error:
        _, failure = error.get_first_failure()
        if failure.exitcode != 2:  # 2: the process said what was wrong itself
            print(f"error: {_failure_line(error)}", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
