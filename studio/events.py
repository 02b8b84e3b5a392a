"""Training progress as a stream of small records.

:func:`studio.training.train.train` yields these; the CLI prints them with a progress bar, the app plots
them, the tests assert on them and ``events.jsonl`` in the run folder keeps them, one JSON object a
line with a ``"kind"`` field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

__all__ = [
    "Event",
    "Started",
    "Notice",
    "Caching",
    "Batch",
    "Epoch",
    "Checkpoint",
    "Stopped",
    "Finished",
    "Error",
    "from_dict",
]


@dataclass
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)


@dataclass
class Started(Event):
    """The run is set up: data loaded, model built, freeze applied."""

    kind: ClassVar[str] = "started"
    run_dir: str
    config: dict
    classes: list[str]
    sizes: dict[str, int]  # images per split
    device: str
    weights: str  # where the pretrained weights came from
    trainable_params: int
    frozen_params: int
    resumed_from_epoch: int = 0


@dataclass
class Notice(Event):
    """Something the user should know that does not stop the run."""

    kind: ClassVar[str] = "notice"
    message: str


@dataclass
class Caching(Event):
    """Progress of the one-off pass that computes the frozen layers' outputs."""

    kind: ClassVar[str] = "caching"
    done: int
    of: int


@dataclass
class Batch(Event):
    kind: ClassVar[str] = "batch"
    epoch: int
    n: int
    of: int
    loss: float


@dataclass
class Epoch(Event):
    kind: ClassVar[str] = "epoch"
    epoch: int
    epochs: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    seconds: float
    best: bool = False
    phase: str = "train"


@dataclass
class Checkpoint(Event):
    kind: ClassVar[str] = "checkpoint"
    path: str
    epoch: int


@dataclass
class Stopped(Event):
    """The run ended early (stop button, Ctrl-C or early stopping); the best model is kept."""

    kind: ClassVar[str] = "stopped"
    reason: str
    epoch: int


@dataclass
class Finished(Event):
    kind: ClassVar[str] = "finished"
    run_dir: str
    metrics: dict
    best_epoch: int
    seconds: float


@dataclass
class Error(Event):
    """The run failed; ``bad_input`` tells a user mistake from a bug."""

    kind: ClassVar[str] = "error"
    message: str
    bad_input: bool = True


_KINDS = {cls.kind: cls for cls in (Started, Notice, Caching, Batch, Epoch, Checkpoint, Stopped,
                                    Finished, Error)}  # fmt: skip


def from_dict(record: dict[str, Any]) -> Event:
    """The event a :meth:`Event.to_dict` record (a line of ``events.jsonl``, or of ``studio
    train --json``) describes: how the app follows a run made by another process."""
    fields = dict(record)
    kind = fields.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"not an event: {record!r}")
    return _KINDS[kind](**fields)
