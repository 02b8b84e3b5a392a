"""Several tasks on one picture: the layout of a multi-task model's outputs.

A CSV such as ``path,material,colour`` asks for one answer per column. The model keeps one
backbone and one linear head per task; the heads sit side by side in the classifier's rows
(``material``'s classes first, then ``colour``'s), so its output is one row of logits that
:class:`Tasks` cuts into blocks. A linear layer whose outputs are concatenated *is* a set of
independent linear heads over the shared features (no weight is shared between the blocks), and
keeping it one timm classifier means everything that reads a run's model (the cache, the exact
head fit, export, Explain, the layer view) works on a multi-task run unchanged. What differs is
how the logits are read: a softmax per single-label task, a sigmoid per tag of a multi-label
task, and a loss and metrics per task.

The classes of a multi-task dataset are the tasks' values, named ``task: value`` so that one
flat list (``labels.json``'s ``labels``) still names every output; ``labels.json`` also holds
``tasks``: ``[{"name", "labels", "multilabel"}, ...]`` in output order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where logits are read: the app's pages import this module
    import torch

__all__ = ["Task", "Tasks", "flat_name", "kind_words", "task_metrics", "SEPARATOR"]

SEPARATOR = ": "


def flat_name(task: str, value: str) -> str:
    """The class name of one task's value in the flat list: ``material: brick``."""
    return f"{task}{SEPARATOR}{value}"


def kind_words(multilabel: bool) -> str:
    """How many answers a task gives a picture, in words (the report, the app, the card)."""
    return "several tags a picture" if multilabel else "one value a picture"


def task_metrics(metrics: dict, task: str | None = None) -> tuple[dict, str | None]:
    """``(metrics, task)``: a multi-task run's metrics for ``task`` (the first task when it is
    not one of them), or a single-task run's metrics and None. Rows in a task's metrics name
    its values alone (``brick``); :func:`flat_name` gives the model's class (``material: brick``)."""
    tasks = metrics.get("tasks") or {}
    if not tasks:
        return metrics, None
    task = task if task in tasks else next(iter(tasks))
    return tasks[task], task


@dataclass(frozen=True)
class Task:
    """One column of the CSV: its values (sorted), whether a picture may carry several, and
    where its block of outputs starts."""

    name: str
    labels: tuple[str, ...]
    multilabel: bool = False
    start: int = 0

    @property
    def stop(self) -> int:
        return self.start + len(self.labels)

    @property
    def columns(self) -> slice:
        """The task's block in a row of logits or probabilities."""
        return slice(self.start, self.stop)

    def kind_words(self) -> str:
        return kind_words(self.multilabel)


@dataclass(frozen=True)
class Tasks:
    """The tasks of a multi-task model, in output order.

    >>> t = Tasks.build([("material", ["brick", "grass"], False), ("colour", ["red", "blue"], False)])
    >>> t.flat_labels
    ['material: brick', 'material: grass', 'colour: blue', 'colour: red']
    """

    tasks: tuple[Task, ...]

    @classmethod
    def build(cls, specs: Sequence[tuple[str, Sequence[str], bool]]) -> Tasks:
        """From ``(name, values, multilabel)`` per task; each task's values are sorted."""
        tasks, start = [], 0
        for name, values, multilabel in specs:
            labels = tuple(sorted(set(values)))
            tasks.append(Task(name, labels, bool(multilabel), start))
            start += len(labels)
        return cls(tuple(tasks))

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def size(self) -> int:
        """Outputs of the model: every task's values together."""
        return sum(len(t.labels) for t in self.tasks)

    @property
    def flat_labels(self) -> list[str]:
        return [flat_name(t.name, v) for t in self.tasks for v in t.labels]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """A softmax over each single-label task's block, a sigmoid per multi-label tag."""
        import torch

        parts = [
            logits[:, t.columns].sigmoid() if t.multilabel else logits[:, t.columns].softmax(-1)
            for t in self.tasks
        ]
        return torch.cat(parts, dim=1)

    def local_labels(self, labels: Sequence[int]) -> list[tuple[int, ...]]:
        """A picture's flat class indices as each task's own indices (in task order)."""
        return [tuple(i - t.start for i in labels if t.start <= i < t.stop) for t in self.tasks]

    def agreement(self, got: np.ndarray, expected: np.ndarray, threshold: float = 0.5) -> float:
        """Share of (picture, task) answers two sets of logits agree on: the same class for a
        single-label task, the same set of tags (at ``threshold``) for a multi-label one."""
        cut = float(np.log(threshold / (1 - threshold)))  # sigmoid(x) >= t  <=>  x >= logit(t)
        agree = []
        for t in self.tasks:
            a, b = got[:, t.columns], expected[:, t.columns]
            if t.multilabel:
                agree.append(((a >= cut) == (b >= cut)).all(1))
            else:
                agree.append(a.argmax(1) == b.argmax(1))
        return float(np.mean(agree)) if agree else 1.0

    def answers(self, logits_row: np.ndarray, threshold: float = 0.5) -> dict[str, str]:
        """Each task's answer for one picture's logits, in words (tags joined by ``;``)."""
        cut = float(np.log(threshold / (1 - threshold)))
        out = {}
        for t in self.tasks:
            block = logits_row[t.columns]
            if t.multilabel:
                out[t.name] = ";".join(v for v, x in zip(t.labels, block) if x >= cut)
            else:
                out[t.name] = t.labels[int(np.argmax(block))]
        return out

    def to_json(self) -> list[dict]:
        return [
            {"name": t.name, "labels": list(t.labels), "multilabel": t.multilabel} for t in self
        ]

    @classmethod
    def from_json(cls, value, flat_labels: Sequence[str]) -> Tasks:
        """The tasks saved in ``labels.json``; ValueError unless they match its flat labels."""
        if not isinstance(value, list) or not value:
            raise ValueError("'tasks' is not a list of tasks")
        specs = []
        for item in value:
            ok = (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and isinstance(item.get("labels"), list)
                and all(isinstance(v, str) for v in item["labels"])
            )
            if not ok:
                raise ValueError("a task has no name or no list of values")
            specs.append((item["name"], item["labels"], bool(item.get("multilabel"))))
        tasks = cls.build(specs)
        if tasks.flat_labels != list(flat_labels):
            raise ValueError("its tasks do not match its list of classes")
        return tasks

    def describe(self) -> str:
        """One line per task, for the data report and the CLI."""
        return "\n".join(
            f"task '{t.name}' ({t.kind_words()}): {len(t.labels)} values: {', '.join(t.labels)}"
            for t in self.tasks
        )
