"""Long work in the background, so a page can watch it, stop it, and stay responsive.

A :class:`Job` runs any event stream (training, and later compression, adaptation or checks:
a function ``stream(stop) -> Iterator[Event]``) in a thread and keeps every event; the app polls
:meth:`Job.snapshot` to redraw its curves, and its Stop button calls :meth:`Job.stop`, which
ends the work cleanly after the current step with the best model kept. :class:`TrainingJob` is
the job for :func:`studio.training.train.train`.

Jobs live in a :class:`JobRegistry`: one slot per workspace and kind of job, claimed and filled
under one lock, so two quick clicks on Start cannot start two runs. Each browser session owns
its workspace's jobs, so one person's work never blocks another's page.

Light on purpose: the app imports it at start, before torch is loaded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import events as ev
from .errors import StudioError

if TYPE_CHECKING:  # the app imports this module before torch is loaded
    from .data.dataset import Dataset
    from .training.config import TrainConfig

__all__ = [
    "Job",
    "TrainingJob",
    "JobSnapshot",
    "JobRegistry",
    "seconds_left",
    "JobQueue",
    "QUEUE",
]


class JobQueue:
    """At most ``limit`` jobs at once in this process; the others wait in line, in order.

    A class of thirty pressing Start on a 2-core laptop would otherwise run thirty trainings
    side by side, each thirty times slower and all holding their memory. A waiting job can be
    cancelled (its Stop) and then leaves nothing behind.
    """

    def __init__(self, limit: int | None = None):
        self._limit = max(1, int(limit)) if limit else None
        self._cond = threading.Condition()
        self._waiting: list[object] = []
        self._running = 0

    @property
    def limit(self) -> int:
        """The set limit, or the default read when first needed (the app sets
        ``STUDIO_MAX_TRAININGS`` from its command line after this module is imported)."""
        if self._limit is None:
            self._limit = self.default_limit()
        return self._limit

    @staticmethod
    def default_limit() -> int:
        """From ``STUDIO_MAX_TRAININGS``, else one training per two cores (at least one)."""
        env = os.environ.get("STUDIO_MAX_TRAININGS", "")
        return int(env) if env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 1) // 2)

    def enter(self, job: object, cancel: threading.Event) -> bool:
        """Wait for a free place; False when ``cancel`` was set while waiting."""
        with self._cond:
            self._waiting.append(job)
            while not (self._waiting[0] is job and self._running < self.limit):
                if cancel.is_set():
                    self._waiting.remove(job)
                    self._cond.notify_all()
                    return False
                self._cond.wait(0.25)
            self._waiting.pop(0)
            self._running += 1
            self._cond.notify_all()
            return True

    def leave(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def place(self, job: object) -> int | None:
        """1 for the next job to start, 2 for the one after it...; None when not waiting."""
        with self._cond:
            return self._waiting.index(job) + 1 if job in self._waiting else None


QUEUE = JobQueue()


def seconds_left(
    events: list[ev.Event], times: list[float], now: float, total_epochs: int
) -> float | None:
    """How long the current step still needs, from the pace of that step alone.

    The one-off caching pass and the epochs after it cost very different amounts (a frozen
    backbone's epoch is a fraction of a second once cached), so each is timed on its own:
    caching from its own progress, training from the batches since training began. ``None``
    until there is enough to go on.
    """
    batches = [(e, t) for e, t in zip(events, times) if isinstance(e, ev.Batch)]
    if not batches:
        caching = [(e, t) for e, t in zip(events, times) if isinstance(e, ev.Caching)]
        if len(caching) < 2 or caching[-1][0].done <= caching[0][0].done:
            return None
        (first, t0), (last, t1) = caching[0], caching[-1]
        pace = (max(now, t1) - t0) / (last.done - first.done)
        return pace * (last.of - last.done)

    def done(batch: ev.Batch) -> float:  # epochs done, as a fraction of the run
        return (batch.epoch - 1 + batch.n / max(1, batch.of)) / max(1, total_epochs)

    (first, t0), (last, t1) = batches[0], batches[-1]
    progress = done(last) - done(first)
    if progress < 0.02:
        return None
    return (max(now, t1) - t0) / progress * (1 - done(last))


@dataclass
class JobSnapshot:
    """What a progress display needs, copied at one moment."""

    state: str  # "queued", "caching", "training", "finished", "stopped", "cancelled", "failed"
    fraction: float  # 0..1 of all batches
    message: str
    epochs: list[ev.Epoch] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    eta_seconds: float | None = None
    run_dir: str | None = None
    metrics: dict | None = None


class Job:
    """One stream of events in a daemon thread.

    Args:
        kind: What it does, in words for messages ("training", "compression"...).
        stream: ``stream(stop)`` yields the events; it must check ``stop`` (a
            :class:`threading.Event`) between steps and end cleanly once it is set.
        total_epochs: Epochs the stream plans, for the progress bar (0 when it has none).
        queue: The line it waits in for a free place (:data:`QUEUE` by default).
    """

    def __init__(
        self,
        kind: str,
        stream: Callable[[threading.Event], Iterator[ev.Event]],
        total_epochs: int = 0,
        queue: JobQueue | None = None,
    ):
        self.kind = kind
        self.stream = stream
        self.total_epochs = total_epochs
        self.queue = queue or QUEUE
        self.cancelled = False
        self.events: list[ev.Event] = []
        self.times: list[float] = []  # when each event arrived (time.monotonic)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"studio-{kind}", daemon=True)
        self.error: str | None = None
        self.started_at: float | None = None

    def start(self) -> Job:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def done(self) -> bool:
        return self.started_at is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.done

    def _run(self) -> None:
        if not self.queue.enter(self, self._stop):
            self.cancelled = True  # stopped while waiting in line: no run folder was made
            return
        try:
            self._follow()
        finally:
            self.queue.leave()

    def _follow(self) -> None:
        try:
            for event in self.stream(self._stop):
                with self._lock:
                    self.events.append(event)
                    self.times.append(time.monotonic())
        except StudioError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never raised into the UI
            self.error = f"{self.kind} failed unexpectedly: {type(exc).__name__}: {exc}"

    def snapshot(self) -> JobSnapshot:
        """The current state, safe to call from any thread at any time."""
        with self._lock:
            events, times = list(self.events), list(self.times)
        epochs = [e for e in events if isinstance(e, ev.Epoch)]
        notices = [e.message for e in events if isinstance(e, ev.Notice)]
        finished = next((e for e in events if isinstance(e, ev.Finished)), None)
        stopped = next((e for e in events if isinstance(e, ev.Stopped)), None)
        started = next((e for e in events if isinstance(e, ev.Started)), None)
        total_epochs = max(1, self.total_epochs)
        last_batch = next((e for e in reversed(events) if isinstance(e, ev.Batch)), None)
        caching = next((e for e in reversed(events) if isinstance(e, ev.Caching)), None)
        if last_batch is not None:
            done_epochs = last_batch.epoch - 1 + last_batch.n / max(1, last_batch.of)
            fraction = done_epochs / total_epochs
        else:
            fraction = 0.0
        eta = seconds_left(events, times, time.monotonic(), total_epochs)
        place = self.queue.place(self)
        if self.error:
            state, message = "failed", self.error
        elif self.cancelled:
            state, message = "cancelled", "Cancelled before it started"
        elif place is not None and not events:
            state = "queued"
            message = (
                f"Waiting for a free place: number {place} in line (this computer runs "
                f"{self.queue.limit} job{'s' if self.queue.limit > 1 else ''} at a time; "
                "Stop cancels it)"
            )
        elif finished is not None:
            state, fraction, eta = ("stopped" if stopped else "finished"), 1.0, 0.0
            metrics = finished.metrics
            message = f"Done: {_words(metrics)}" + (f" ({stopped.reason})" if stopped else "")
        elif stopped is not None and self.done:
            state, message = "stopped", f"Stopped before the first epoch ended ({stopped.reason})"
        elif last_batch is None and caching is not None:
            state = "caching"
            message = (
                f"Preparing: computing frozen layers once ({caching.done}/{caching.of} pictures)"
            )
        elif last_batch is not None:
            state = "training"
            message = (
                f"Epoch {last_batch.epoch} of {total_epochs}, batch {last_batch.n}/{last_batch.of}"
            )
        else:
            state, message = "training", "Starting..."
        return JobSnapshot(
            state,
            min(1.0, fraction),
            message,
            epochs,
            notices,
            eta,
            started.run_dir if started else None,
            finished.metrics if finished else None,
        )


def _words(metrics: dict) -> str:
    from .inspection.evaluate import score_words  # torch is loaded by now: the job has run

    return score_words(metrics)


class TrainingJob(Job):
    """:func:`studio.training.train.train` as a job; with ``devices`` above one, the run is
    trained by that many processes (one per GPU) started through torchrun
    (:func:`studio.training.torchrun.stream_events`), and followed here the same way."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset | None = None,
        queue: JobQueue | None = None,
        devices: int = 1,
    ):
        self.config = config
        self.dataset = dataset
        self.devices = devices
        super().__init__("training", self._train, config.epochs, queue)

    def _train(self, stop: threading.Event) -> Iterator[ev.Event]:
        if self.devices > 1:
            from .training.torchrun import stream_events

            return stream_events(self.config, self.devices, stop)
        from .training.train import train

        return train(self.config, self.dataset, stop=stop)


class _Starting:
    """Holds a slot while its job is being set up (torch may still be loading): a second
    click on Start in that time finds it and is refused, and a Stop in that time is remembered
    and passed on to the job once it exists."""

    done = False

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class JobRegistry:
    """The jobs of every workspace, one slot per (workspace, kind), behind one lock.

    The app claims a slot before it sets a job up, hands the started job over, or releases
    the slot when the set-up failed; :meth:`get` finds what is running to show or stop it.
    """

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], Job | _Starting] = {}
        self._lock = threading.Lock()

    def claim(self, workspace: str, kind: str) -> None:
        """Reserve the slot, or say why not (check and claim are one step)."""
        with self._lock:
            job = self._jobs.get((workspace, kind))
            if job is not None and not job.done:
                raise StudioError(f"a {kind} run is already going or waiting; stop it first")
            self._jobs[(workspace, kind)] = _Starting()

    def release(self, workspace: str, kind: str) -> None:
        """Give the slot back after a set-up that failed before its job started."""
        with self._lock:
            if isinstance(self._jobs.get((workspace, kind)), _Starting):
                del self._jobs[(workspace, kind)]

    def hand_over(self, workspace: str, kind: str, job: Job) -> None:
        """Put the started job in its slot (a Stop pressed during the set-up stops it)."""
        with self._lock:
            placeholder = self._jobs.get((workspace, kind))
            self._jobs[(workspace, kind)] = job
        if isinstance(placeholder, _Starting) and placeholder.stopped:
            job.stop()

    def get(self, workspace: str, kind: str) -> Job | _Starting | None:
        with self._lock:
            return self._jobs.get((workspace, kind))
