"""Suggest a learning rate: the LR range test (Smith, 2015), as popularised by fastai.

The learning rate grows exponentially over a short run while the loss is recorded; the suggestion
is where the smoothed loss falls fastest. The model is built fresh and thrown away afterwards, and
a frozen backbone uses the same feature cache as training, so the test costs seconds.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.dataset import Dataset
from ..models.freeze import apply_freeze, keep_frozen_norms_in_eval, optimizer_groups, parse_freeze
from ..paths import cache_dir
from .config import TrainConfig
from .loop import make_feeder, make_optimizer, make_task_loss, set_up, without_events

__all__ = ["lr_find", "suggest_lr"]


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    """The learning rate where the smoothed loss curve is steepest downwards.

    >>> lrs = list(np.logspace(-5, 0, 50))
    >>> losses = [1 / (1 + np.exp(8 * (np.log10(lr) + 2.5))) for lr in lrs]  # drops around 3e-3
    >>> 1e-3 < suggest_lr(lrs, losses) < 1e-2
    True
    """
    log_lrs = np.log10(np.asarray(lrs))
    slopes = np.gradient(np.asarray(losses), log_lrs)
    return float(lrs[int(np.argmin(slopes))])


def lr_find(
    config: TrainConfig,
    dataset: Dataset | None = None,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 80,
) -> dict:
    """Run the LR range test for ``config``'s backbone, freeze spec and data.

    Returns:
        ``{"lrs": [...], "losses": [...], "suggestion": lr}`` (losses smoothed).
    """
    quiet = TrainConfig(**{**config.to_dict(), "augment": "none", "cache_views": 1})
    run = set_up(quiet, dataset)
    model, groups = run.model, run.groups
    frozen = parse_freeze(config.freeze, groups)
    apply_freeze(model, groups, frozen)
    feeder = without_events(make_feeder(run, frozen, cache_dir("lr-find"), with_val=False))
    optimizer = make_optimizer(
        config, optimizer_groups(model, groups, start_lr, config.weight_decay, config.layer_decay)
    )
    base = [g["lr"] for g in optimizer.param_groups]
    factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    loss_fn = make_task_loss(run.dataset.multilabel, config.label_smoothing, run.dataset.tasks)
    lrs, losses = [], []
    smoothed, best = 0.0, math.inf
    step = 0
    while step < steps:
        for x, y in feeder.train_batches(config.seed + step):
            scale = factor**step
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr * scale
            model.train()
            keep_frozen_norms_in_eval(model)
            loss = loss_fn(feeder.forward(model, x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            smoothed = 0.9 * smoothed + 0.1 * float(loss.detach())
            value = smoothed / (1 - 0.9 ** (step + 1))
            lrs.append(start_lr * scale)
            losses.append(value)
            best = min(best, value)
            step += 1
            if step >= steps or value > 4 * best or not math.isfinite(value):
                step = steps
                break
    feeder.close()
    # The last points, where the loss explodes, would only confuse the suggestion.
    keep = max(3, len(losses) - 3)
    return {"lrs": lrs, "losses": losses, "suggestion": suggest_lr(lrs[:keep], losses[:keep])}
