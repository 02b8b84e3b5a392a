"""Structured pruning: whole channels removed with Torch-Pruning, then a short recovery fine-tune.

Torch-Pruning's dependency graph (DepGraph, Fang et al., CVPR 2023) finds every layer that must
shrink with a channel (the batch norm after a convolution, the depthwise convolution that
shares its channels, the residual additions that tie blocks together), so removing a channel
keeps the network whole; the model is narrower, not masked, so it is smaller on disk and faster
on any runtime. The classifier is left alone (its outputs are the classes).

Importance of a channel group: ``magnitude`` (the L2 norm of its weights), ``bn`` (the batch
norm's scale, as in Network Slimming) or ``taylor`` (weight times gradient, from a few training
batches: what removing it would cost the loss). Per layer (every layer loses the same share)
or ``global`` (the least important channels anywhere, capped at 90% of a layer). A target can
be a share of channels (``ratio``) or of the parent's multiply-accumulates (``macs``, found by
bisecting the ratio).
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from .. import events as ev
from ..errors import StudioError
from ..models.kinds import LoadedRun, save_model
from ..models.pruned import layer_widths
from ..training.config import TrainConfig
from ..training.tune import tune
from .measure import count_macs, count_params
from .variant import (
    Stopped,
    classifier_of,
    finish,
    float_parent,
    training_sample,
    variant_folder,
)

__all__ = ["IMPORTANCES", "prune_model", "prune_run"]

IMPORTANCES = ("magnitude", "bn", "taylor")


def _importance(name: str):
    import torch_pruning as tp

    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "bn":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise StudioError(f"unknown importance {name!r}; choose {', '.join(IMPORTANCES)}")


def prune_model(
    model: nn.Module,
    input_size: tuple[int, int, int],
    ratio: float,
    importance: str = "magnitude",
    global_pruning: bool = False,
    gradients: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """Remove ``ratio`` of the channels of ``model`` (in place) and return it.

    ``gradients(model)`` must leave gradients on the weights for ``taylor`` importance (a
    few training batches' loss, backpropagated)."""
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise StudioError(f"the pruning ratio must be between 0 and 1, not {ratio}")
    example = torch.zeros(1, *input_size)
    head = classifier_of(model)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning's notes on layers it leaves alone
        pruner = tp.pruner.BasePruner(
            model, example, importance=_importance(importance), pruning_ratio=ratio,
            global_pruning=global_pruning, max_pruning_ratio=0.9,
            ignored_layers=[head] if head is not None else [], round_to=8,
        )  # fmt: skip
        if importance == "taylor":
            if gradients is None:
                raise StudioError("Taylor importance needs training pictures for its gradients")
            model.zero_grad()
            gradients(model)
        pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def ratio_for_macs(
    model: nn.Module, input_size, target: float, importance: str, global_pruning: bool, gradients
) -> float:
    """The channel share whose pruning leaves about ``target`` of the MACs (bisection)."""
    if not 0 < target < 1:
        raise StudioError(f"the MAC target must be a share between 0 and 1, not {target}")
    full = count_macs(model, input_size)
    low, high = 0.01, 0.95
    for _ in range(8):
        mid = (low + high) / 2
        trial = prune_model(copy.deepcopy(model), input_size, mid, importance, global_pruning,
                            gradients)  # fmt: skip
        if count_macs(trial, input_size) / full > target:
            low = mid
        else:
            high = mid
    return round((low + high) / 2, 3)


def _taylor_gradients(parent: LoadedRun, dataset, seed: int, pictures: int = 32):
    """Backpropagates the task loss of up to ``pictures`` training pictures (seeded sample)."""
    from ..data.loaders import prepared

    samples = training_sample(dataset, pictures, seed)
    transform = parent.transform()

    def backward(model: nn.Module) -> None:
        for i in range(0, len(samples), 8):
            chunk = samples[i : i + 8]
            x = torch.stack([prepared(s.path, transform) for s in chunk])
            y = torch.tensor([s.labels[0] for s in chunk])
            nn.functional.cross_entropy(model(x), y).backward()

    return backward


def recovery_config(parent: LoadedRun, out: Path, epochs: int, lr: float, seed: int):
    """The parent's settings, turned into a gentle fine-tune of every layer (nothing frozen,
    nothing cached: every layer changed; no pull towards pretrained weights of other shapes)."""
    return TrainConfig.from_dict(
        {**parent.config, "out": str(out), "freeze": "none", "epochs": max(1, epochs),
         "head_epochs": 0, "lr": lr, "layer_decay": 1.0, "warmup_epochs": 0.0, "l2sp": 0.0,
         "patience": 0, "cache": False, "augment": "light", "seed": seed, "resume": False}
    ).validate()  # fmt: skip


def _prune(model, input_size, ratio, macs, importance, global_pruning, grads):
    """Prune ``model`` in place (to ``macs`` of its MACs when given, else by ``ratio``), saying
    what was removed; returns the ratio used."""
    if macs is not None:
        yield ev.Notice(f"finding the share of channels that leaves {macs:.0%} of the MACs")
        ratio = ratio_for_macs(model, input_size, macs, importance, global_pruning, grads)
    before = count_params(model), count_macs(model, input_size)
    prune_model(model, input_size, ratio, importance, global_pruning, grads)
    after = count_params(model), count_macs(model, input_size)
    yield ev.Notice(
        f"removed {ratio:.0%} of the channels ({importance}"
        f"{', global' if global_pruning else ', per layer'}): parameters "
        f"{before[0]:,} -> {after[0]:,}, MACs {before[1]:,} -> {after[1]:,}"
    )
    return ratio


def prune_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    ratio: float | None = 0.3,
    macs: float | None = None,
    importance: str = "magnitude",
    global_pruning: bool = False,
    finetune_epochs: int = 3,
    lr: float = 1e-3,
    seed: int = 0,
    threads: int = 2,
    stop=None,
) -> Iterator[ev.Event]:
    """Prune a run's model into a new run folder ``out`` and fine-tune it back; yields the
    pruning's notes and the recovery's ``Batch``/``Epoch`` events, then ``Finished``.

    ``macs`` (a share of the parent's MACs) takes precedence over ``ratio`` when given. A stop
    during the recovery keeps the best finished epoch; a stop before it keeps nothing.
    """
    begin = time.perf_counter()
    parent = float_parent(run_dir)
    _importance(importance)  # bad settings fail before any work
    if macs is None and not (ratio is not None and 0 < ratio < 1):
        raise StudioError(f"the pruning ratio must be between 0 and 1, not {ratio}")
    if macs is not None and not 0 < macs < 1:
        raise StudioError(f"the MAC target must be a share between 0 and 1, not {macs}")
    if finetune_epochs < 0:
        raise StudioError("the recovery fine-tune needs 0 or more epochs")
    dataset = parent.dataset()
    input_size = tuple(parent.preprocess["input_size"])
    grads = _taylor_gradients(parent, dataset, seed) if importance == "taylor" else None
    model = copy.deepcopy(parent.model)
    try:
        with variant_folder(parent, out) as run, tempfile.TemporaryDirectory() as tmp:
            ratio = yield from _prune(model, input_size, ratio, macs, importance, global_pruning,
                                      grads)  # fmt: skip
            if stop is not None and stop.is_set():
                raise Stopped
            tuned = None
            if finetune_epochs:
                cfg = recovery_config(parent, run, finetune_epochs, lr, seed)
                tuned = yield from tune(model, cfg, dataset, source=f"pruned {parent.run_dir.name}",
                                        stop=stop)  # fmt: skip
                if tuned.best_epoch == 0:
                    raise Stopped
            step = {
                "name": "prune",
                "ratio": ratio,
                "importance": importance,
                "global": global_pruning,
                "macs_target": macs,
                "recovery_epochs": len(tuned.history) if tuned else 0,
                "lr": lr,
                "seed": seed,
            }
            save_model(run, model, backbone=parent.config["backbone"],
                       num_classes=len(parent.labels), kind="pruned", parent=parent.run_dir.name,
                       step=step, extra={"widths": layer_widths(model)})  # fmt: skip
            if tuned is not None:
                from ..runs import HISTORY, save_history

                save_history(run / HISTORY, tuned.history)
            yield ev.Notice("measuring accuracy, size and speed of both models")
            metrics = finish(run, "prune", parent, dataset, Path(tmp), threads)
    except Stopped as stopped:
        yield ev.Stopped(str(stopped), 0)
        return
    if tuned is not None and tuned.stopped:
        yield ev.Stopped(f"recovery {tuned.stopped}; kept epoch {tuned.best_epoch}", 0)
    yield ev.Finished(str(run), metrics, tuned.best_epoch if tuned else 0,
                      time.perf_counter() - begin)  # fmt: skip
