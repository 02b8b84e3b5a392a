"""Unstructured magnitude pruning: the smallest weights set to zero, the shapes unchanged.

PyTorch's own ``torch.nn.utils.prune`` (L1 magnitude, per layer or across all layers at once)
does the zeroing, and the masks are then made permanent. The model keeps every shape, so it is
still a plain timm model (its download includes the Python sample) and Explain works on it.

What it buys, said plainly in the app and measured in ``compression.json``: the zeros make the
file compress far better (``zipped_bytes``), but the model is no faster on a CPU, since dense
kernels multiply by zero as fast as by anything else; sparse kernels pay off only at very high
sparsity on hardware made for it. The record lists the share of zeros in every layer.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from .. import events as ev
from ..errors import StudioError
from ..models.kinds import save_model
from ..runs import COMPRESSION, load_json, save_json
from .variant import Stopped, classifier_of, finish, float_parent, variant_folder

__all__ = ["sparsify_model", "sparsify_run"]


def _prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolutions and linear layers, except the classifier (its few weights are the classes)."""
    head = classifier_of(model)
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and m is not head
    ]


def sparsify_model(model: nn.Module, amount: float, global_pruning: bool = True) -> dict:
    """Zero ``amount`` of the weights (smallest magnitude first) in place; the share of zeros
    in every layer, and overall."""
    import torch.nn.utils.prune as prune

    if not 0 < amount < 1:
        raise StudioError(f"the share of weights to zero must be between 0 and 1, not {amount}")
    layers = _prunable(model)
    if global_pruning:
        prune.global_unstructured(
            [(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured, amount=amount
        )
    else:
        for _, m in layers:
            prune.l1_unstructured(m, "weight", amount=amount)
    for _, m in layers:
        prune.remove(m, "weight")  # the zeros become the weights themselves
    zeros = {name: int((m.weight == 0).sum()) for name, m in layers}
    sizes = {name: m.weight.numel() for name, m in layers}
    return {
        "overall": sum(zeros.values()) / max(1, sum(sizes.values())),
        "layers": {name: round(zeros[name] / sizes[name], 4) for name in zeros},
    }


def sparsify_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    amount: float = 0.5,
    global_pruning: bool = True,
    threads: int = 2,
    should_stop=lambda: False,
) -> Iterator[ev.Event]:
    """Zero the smallest weights of a run's model into a new run folder ``out``."""
    start = time.perf_counter()
    parent = float_parent(run_dir)
    if not 0 < amount < 1:
        raise StudioError(f"the share of weights to zero must be between 0 and 1, not {amount}")
    dataset = parent.dataset()
    model = copy.deepcopy(parent.model)
    try:
        with variant_folder(parent, out) as run, tempfile.TemporaryDirectory() as tmp:
            sparsity = sparsify_model(model, amount, global_pruning)
            yield ev.Notice(f"set {sparsity['overall']:.0%} of the weights to zero")
            if should_stop():
                raise Stopped
            step = {"name": "sparsify", "amount": amount, "global": global_pruning}
            save_model(run, model, backbone=parent.config["backbone"],
                       num_classes=len(parent.labels), parent=parent.run_dir.name,
                       step=step)  # fmt: skip
            yield ev.Notice("measuring accuracy, size and speed of both models")
            metrics = finish(run, "sparsify", parent, dataset, Path(tmp), threads)
            record = load_json(run / COMPRESSION)
            save_json(run / COMPRESSION, {**record, "sparsity": sparsity})
    except Stopped as stopped:
        yield ev.Stopped(str(stopped), 0)
        return
    yield ev.Finished(str(run), metrics, 0, time.perf_counter() - start)
