"""Training several tasks on one backbone: the loss, the score, and the exact fit per head.

The model's output is every task's block of logits side by side (:mod:`studio.data.tasks`); the
targets are multi-hot over all of them. Each task has its own loss: cross-entropy (with label
smoothing) over a single-label task's block, binary cross-entropy per tag of a multi-label one.
They are combined one of two ways, chosen per run (``TrainConfig.task_weights``):

* ``equal``: the mean of the task losses;
* ``uncertainty``: Kendall, Gal & Cipolla (CVPR 2018), "Multi-task learning using uncertainty to
  weigh losses": each task ``t`` has a learned ``s_t = log sigma_t^2`` and the loss is the mean
  of ``exp(-s_t) * L_t + s_t / 2`` (their classification form). A task that stays hard (noisy
  labels, say) earns a large ``sigma`` and pulls the shared backbone less; the ``s_t / 2`` term
  keeps every ``sigma`` from growing without end. The weights train with the model (their own
  optimizer group, no weight decay) and are kept in checkpoints and reported at the end.

With the backbone frozen the weighting changes nothing: the heads share no weight, so each
head's best solution is that of its own task's loss, whatever it is multiplied by. That is why
the exact head fit (:func:`fit_heads`) solves each single-label task's head alone, with
:mod:`studio.training.head_fit`'s logistic regression and its own cross-validated weight decay.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tasks import Tasks
from .head_fit import LinearFit, choose_l2, fit_rounds

__all__ = ["TASK_WEIGHTS", "MultiTaskLoss", "count_correct_tasks", "fit_heads"]

TASK_WEIGHTS = ("equal", "uncertainty")


class MultiTaskLoss(nn.Module):
    """``loss(logits, multi-hot targets)`` over every task; learns the task weights when
    ``learned`` (Kendall et al. 2018), else averages the tasks' losses."""

    def __init__(self, tasks: Tasks, label_smoothing: float = 0.0, learned: bool = False):
        super().__init__()
        self.tasks, self.label_smoothing = tasks, label_smoothing
        self.log_vars = nn.Parameter(torch.zeros(len(tasks))) if learned else None

    def per_task(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each task's own loss (a vector, one value per task)."""
        losses = []
        for t in self.tasks:
            block, target = logits[:, t.columns], y[:, t.columns]
            if t.multilabel:
                losses.append(F.binary_cross_entropy_with_logits(block, target))
            else:
                losses.append(
                    F.cross_entropy(block, target.argmax(1), label_smoothing=self.label_smoothing)
                )
        return torch.stack(losses)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = self.per_task(logits, y)
        if self.log_vars is None:
            return losses.mean()
        s = self.log_vars.to(losses)
        return (torch.exp(-s) * losses + s / 2).mean()

    def weights(self) -> dict[str, float]:
        """Each task's weight ``exp(-s_t)`` (1 for every task with equal weighting)."""
        if self.log_vars is None:
            return {t.name: 1.0 for t in self.tasks}
        return {t.name: float(torch.exp(-v)) for t, v in zip(self.tasks, self.log_vars.detach())}


def count_correct_tasks(
    logits: torch.Tensor, y: torch.Tensor, tasks: Tasks, threshold: float
) -> float:
    """Right answers summed over pictures, each picture scoring the share of its tasks answered
    right (a multi-label task is right when its whole set of tags is): divided by the number of
    pictures, the mean per-task accuracy."""
    right = torch.zeros(len(y), device=logits.device)
    for t in tasks:
        block, target = logits[:, t.columns], y[:, t.columns]
        if t.multilabel:
            right += ((block.sigmoid() >= threshold) == (target > 0.5)).all(1).float()
        else:
            right += (block.argmax(1) == target.argmax(1)).float()
    return float(right.sum()) / len(tasks)


def fit_heads(
    x: torch.Tensor, y: torch.Tensor, tasks: Tasks, rounds: int, seed: int, start: LinearFit | None
) -> tuple[dict[str, float], Iterator[LinearFit]]:
    """Each single-label task's head solved exactly on frozen features ``x`` (multi-hot ``y``):
    ``(weight decay per task, the whole classifier after each round)``."""
    l2s, solvers = {}, []
    for t in tasks:
        target = y[:, t.columns].argmax(1)
        l2, _ = choose_l2(x, target, len(t.labels), seed=seed)
        begin = None
        if start is not None:
            begin = LinearFit(start.weight[t.columns], start.bias[t.columns], l2)
        l2s[t.name] = l2
        solvers.append(fit_rounds(x, target, len(t.labels), l2, rounds, begin))

    def combined() -> Iterator[LinearFit]:
        for fits in zip(*solvers, strict=True):
            yield LinearFit(
                torch.cat([f.weight for f in fits]), torch.cat([f.bias for f in fits]), 0.0
            )

    return l2s, combined()
