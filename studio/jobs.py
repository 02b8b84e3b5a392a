"""Training in the background, so a page can watch it, stop it, and stay responsive.

A :class:`TrainingJob` runs :func:`studio.train.train` in a thread and keeps every event; the app
polls :meth:`TrainingJob.snapshot` to redraw its curves, and its Stop button calls
:meth:`TrainingJob.stop`, which ends the run cleanly after the current batch with the best model
kept. Each browser session owns its jobs, so one person's training never blocks another's page.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from . import events as ev
from .data import Dataset
from .errors import StudioError
from .evaluate import score_words
from .train import TrainConfig, train

__all__ = ["TrainingJob", "JobSnapshot", "seconds_left", "TrainingQueue", "QUEUE"]


class TrainingQueue:
    """At most ``limit`` trainings at once in this process; the others wait in line, in order.

    A class of thirty pressing Start on a 2-core laptop would otherwise run thirty trainings
    side by side, each thirty times slower and all holding their memory. A waiting job can be
    cancelled (its Stop) and then leaves nothing behind.
    """

    def __init__(self, limit: int | None = None):
        self.limit = max(1, int(limit or self.default_limit()))
        self._cond = threading.Condition()
        self._waiting: list[object] = []
        self._running = 0

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


QUEUE = TrainingQueue()


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


class TrainingJob:
    """One training run in a daemon thread."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset | None = None,
        queue: TrainingQueue | None = None,
    ):
        self.config = config
        self.dataset = dataset
        self.queue = queue or QUEUE
        self.cancelled = False
        self.events: list[ev.Event] = []
        self.times: list[float] = []  # when each event arrived (time.monotonic)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="studio-train", daemon=True)
        self.error: str | None = None
        self.started_at: float | None = None

    def start(self) -> TrainingJob:
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
            self._train()
        finally:
            self.queue.leave()

    def _train(self) -> None:
        try:
            for event in train(self.config, self.dataset, stop=self._stop):
                with self._lock:
                    self.events.append(event)
                    self.times.append(time.monotonic())
        except StudioError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never raised into the UI
            self.error = f"training failed unexpectedly: {type(exc).__name__}: {exc}"

    def snapshot(self) -> JobSnapshot:
        """The current state, safe to call from any thread at any time."""
        with self._lock:
            events, times = list(self.events), list(self.times)
        epochs = [e for e in events if isinstance(e, ev.Epoch)]
        notices = [e.message for e in events if isinstance(e, ev.Notice)]
        finished = next((e for e in events if isinstance(e, ev.Finished)), None)
        stopped = next((e for e in events if isinstance(e, ev.Stopped)), None)
        started = next((e for e in events if isinstance(e, ev.Started)), None)
        total_epochs = self.config.epochs
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
                f"{self.queue.limit} training{'s' if self.queue.limit > 1 else ''} at a time; "
                "Stop cancels it)"
            )
        elif finished is not None:
            state, fraction, eta = ("stopped" if stopped else "finished"), 1.0, 0.0
            metrics = finished.metrics
            message = f"Done: {score_words(metrics)}" + (f" ({stopped.reason})" if stopped else "")
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
