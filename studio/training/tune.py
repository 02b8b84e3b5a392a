"""Fine-tune a model made elsewhere: the recipe a pruned model's recovery (and, later, a distilled
student) trains with, on the public loop (:mod:`studio.training.loop`).

Smaller than :mod:`studio.training.train`: the model is given (no new head, nothing frozen,
no cache: every layer changed), the epochs yield the same ``Batch`` and ``Epoch`` events as a
training run (the app draws the same curves), the weights of the epoch with the lowest
validation loss are kept, and a stop ends it after the current step with the best epoch so far
(a half epoch is not an epoch).

Batch-norm statistics are measured again after every epoch (:func:`recalibrate_norms`): on the
few hundred pictures people bring, an epoch is a handful of steps, and the running averages a
batch norm keeps while the weights move fast lag so far behind that the model in eval mode
answered one class for everything (measured on the example: validation at chance while
training accuracy was 1.0, right again once the statistics were measured afresh).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import events as ev
from ..data.dataset import Dataset
from ..models.freeze import optimizer_groups
from .config import TrainConfig
from .loop import (
    ImageFeeder,
    Step,
    StopFlag,
    make_optimizer,
    make_scheduler,
    make_task_loss,
    set_up,
    train_epoch,
    validate,
)

__all__ = ["Tuned", "tune", "recalibrate_norms"]


@torch.no_grad()
def recalibrate_norms(model: nn.Module, batches) -> None:
    """Set every batch norm's running mean and variance to their plain average over
    ``batches`` of inputs (the model's weights are not changed)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch
    model.train()
    for x in batches:
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


@dataclass
class Tuned:
    """What tuning left: the kept weights (already in the model), the epochs' rows, why it
    ended early (None: it ran every epoch)."""

    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None


def tune(
    model: nn.Module,
    cfg: TrainConfig,
    dataset: Dataset,
    *,
    source: str = "",
    stop: StopFlag | None = None,
    extra_loss: Callable[[Step], torch.Tensor] | None = None,
) -> Generator[ev.Event, None, Tuned]:
    """Train every layer of ``model`` for ``cfg.epochs`` on ``dataset``'s training split,
    keeping the best epoch's weights in ``model``. Yields ``Batch`` and ``Epoch`` events."""
    run = set_up(cfg, dataset, model=model, source=source)
    feeder = ImageFeeder(run.train_ds, run.val_ds, cfg, run.device, run.channels_last)
    optimizer = make_optimizer(
        cfg, optimizer_groups(model, run.groups, cfg.lr, cfg.weight_decay, cfg.layer_decay)
    )
    steps = feeder.steps_per_epoch()
    scheduler = make_scheduler(cfg, optimizer, steps * cfg.epochs, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=run.amp and not torch.cuda.is_bf16_supported())
    loss_fn = make_task_loss(dataset.multilabel, cfg.label_smoothing, dataset.tasks)
    result, best_loss, best_state = Tuned(), float("inf"), None
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        loss, acc, seen, stop_asked = yield from train_epoch(
            run, feeder, loss_fn, optimizer, scheduler, scaler, epoch, stop, extra_loss
        )
        if stop_asked and seen < len(run.train_ds):
            result.stopped = "stopped by the user"
            break
        recalibrate_norms(model, (x for x, _ in feeder.plain_train_batches(run.eval_tf)))
        val_loss, val_acc = validate(run, feeder)
        score = val_loss if val_loss is not None else loss
        best = score < best_loss
        if best:
            best_loss, best_state = score, copy.deepcopy(model.state_dict())
            result.best_epoch = epoch
        row = dict(epoch=epoch, phase="recover", train_loss=loss, train_acc=acc, val_loss=val_loss,
                   val_acc=val_acc, lr=optimizer.param_groups[-1]["lr"],
                   seconds=time.perf_counter() - start)  # fmt: skip
        result.history.append(row)
        yield ev.Epoch(epochs=cfg.epochs, best=best, **row)
        if stop_asked:
            result.stopped = "stopped by the user"
            break
    feeder.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result
