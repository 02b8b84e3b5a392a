"""Which layers carry over: what fine-tuning changed in each layer group, and which stages of
two different networks see alike.

Similarity of two layers is **linear CKA** (Kornblith et al., "Similarity of Neural Network
Representations Revisited", ICML 2019) between their outputs on the same pictures: 1 when one
is a rotation and rescaling of the other, near 0 when unrelated; it compares layers of any
widths, so it also works across architectures. A layer's output is pooled to at most 2 x 2
positions per channel first (the full maps of early layers would need gigabytes for a few
hundred pictures); CKA is then computed from the pictures' Gram matrices, which cost
pictures² whatever the width. Written here (a dozen lines, tested against its definition and
its invariances) rather than taken from a package: the maintained ones (torch-cka and the like)
hook the layers and run the pictures themselves, which the studio already does its own way.

For a finished run, each group of the fine-tuned model is compared with the same group of the
pretrained backbone it started from (CKA on the run's own pictures, and the relative change of
its weights), and one sentence says what that means for freezing next time, with the speed-up
estimated from the time each group takes on this computer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import StudioError

__all__ = ["linear_cka", "GroupChange", "what_changed", "compare_layers", "freezing_advice",
           "training_cost", "trained_epochs", "BARELY"]  # fmt: skip

BARELY = 0.95  # CKA at or above which a group "barely changed"
MAX_PICTURES = 200
POOL = 2  # positions per side a layer's maps are pooled to


def _centred_gram(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two layers' outputs on the same N pictures (N x P and N x Q):
    HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X Xᵀ, L = Y Yᵀ of the centred features."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("CKA needs the same pictures (at least two) in both layers")
    k, m = _centred_gram(np.asarray(x, np.float64)), _centred_gram(np.asarray(y, np.float64))
    den = np.sqrt(np.sum(k * k) * np.sum(m * m))
    return float(np.sum(k * m) / den) if den > 0 else 0.0


@dataclass
class GroupChange:
    """How much one layer group moved during fine-tuning."""

    group: str
    cka: float  # fine-tuned vs pretrained outputs on the run's pictures; 0 for the new head
    weight_change: float | None  # ||W - W0|| / ||W0||; None for the new head
    frozen: bool  # frozen in the run: unchanged by construction
    ms: float  # forward milliseconds per picture here (for the speed-up estimate)

    def to_dict(self) -> dict:
        return asdict(self)


def _pooled(output) -> torch.Tensor:
    """A layer's output as one row per picture: maps pooled to POOL x POOL, tokens averaged."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() == 4:
        size = min(POOL, output.shape[-1], output.shape[-2])
        output = torch.nn.functional.adaptive_avg_pool2d(output, size)
    elif output.dim() == 3:  # transformer tokens
        output = output.mean(dim=1)
    return output.flatten(1).float()


@torch.no_grad()
def group_outputs(model: torch.nn.Module, images: torch.Tensor, batch: int = 32):
    """``(groups, {group: N x P outputs}, {group: ms per picture})`` of ``model`` on
    ``images``: each group's output is its last module's."""
    from ..models.backbones import model_groups

    groups = model_groups(model)
    modules = dict(model.named_modules())
    outputs: dict[str, list] = {g.name: [] for g in groups}
    spent: dict[str, float] = {g.name: 0.0 for g in groups}
    handles, started = [], {}
    for g in groups:
        first, last = modules[g.modules[0]], modules[g.modules[-1]]
        handles.append(first.register_forward_pre_hook(
            lambda m, a, n=g.name: started.__setitem__(n, time.perf_counter())))  # fmt: skip

        def keep(m, a, out, n=g.name):
            spent[n] += time.perf_counter() - started.get(n, time.perf_counter())
            outputs[n].append(_pooled(out).numpy())

        handles.append(last.register_forward_hook(keep))
    try:
        model.eval()
        for start in range(0, len(images), batch):
            model(images[start : start + batch])
    finally:
        for h in handles:
            h.remove()
    ms = {n: 1000 * t / len(images) for n, t in spent.items()}
    return groups, {n: np.concatenate(v) for n, v in outputs.items() if v}, ms


@torch.no_grad()
def _weight_change(tuned: torch.nn.Module, start: torch.nn.Module, names: Sequence[str]):
    a, b = dict(tuned.named_parameters()), dict(start.named_parameters())
    if any(a[n].shape != b[n].shape for n in names):
        return None  # a new head: nothing to compare with
    diff = sum(float((a[n] - b[n]).pow(2).sum()) for n in names)
    base = sum(float(b[n].pow(2).sum()) for n in names)
    return (diff / base) ** 0.5 if base > 0 else None


def _images(loaded, limit: int, seed: int) -> torch.Tensor:
    """A seeded sample of the run's own pictures, as its model sees them."""
    from ..data.loaders import prepared

    samples = [s for split in loaded.dataset().splits.values() for s in split]
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(samples))[:limit]
    tf = loaded.transform()
    return torch.stack([prepared(samples[i].path, tf) for i in sorted(picked)])


def what_changed(run: str | Path, max_pictures: int = MAX_PICTURES, seed: int = 0):
    """Each group of a run's fine-tuned model against the pretrained backbone it started
    from: a list of :class:`GroupChange`, input to output."""
    from ..models.backbones import create_backbone
    from ..models.freeze import parse_freeze
    from ..models.kinds import load_run

    loaded = load_run(run)
    loaded.kind.require("comparing its layers with the pretrained ones", loaded.kind.gradients,
                        loaded.record.get("parent"))  # fmt: skip
    c = loaded.config
    if not c.get("pretrained", True):
        raise StudioError("this run started from random weights: there is no pretrained "
                          "model to compare it with")  # fmt: skip
    start, _ = create_backbone(c["backbone"], len(loaded.labels),
                               weights_file=c.get("weights_file"))  # fmt: skip
    images = _images(loaded, max_pictures, seed)
    groups, tuned_out, ms = group_outputs(loaded.model, images)
    _, start_out, _ = group_outputs(start.eval(), images)
    frozen = set(parse_freeze(c.get("freeze", "backbone"), groups))
    changes = []
    for g in (g for g in groups if g.name in tuned_out):
        if g.name == "head":  # a new classifier for the run's classes: nothing to compare with
            cka, change = 0.0, None
        else:
            cka = linear_cka(tuned_out[g.name], start_out[g.name])
            change = _weight_change(loaded.model, start, g.params)
        changes.append(GroupChange(g.name, cka, change, g.name in frozen, round(ms[g.name], 2)))
    return changes


def freezing_advice(changes: Sequence[GroupChange], epochs: int) -> str:
    """One sentence, from the run's own numbers: which leading groups barely changed (beyond
    those the run froze), and about how much faster training would be with them frozen too.

    The estimate counts, per picture, one pass through the frozen prefix (its outputs are
    cached once) plus, each of ``epochs`` epochs, a forward and a backward pass (about twice
    the forward) through the groups that train, from the time each group took here."""
    frozen = 0
    while frozen < len(changes) and changes[frozen].frozen:
        frozen += 1
    barely = frozen
    while barely < len(changes) - 1 and changes[barely].cka >= BARELY:
        barely += 1
    said = f"The first {frozen} group(s) were frozen in this run. " if frozen else ""
    if frozen >= len(changes) - 1:
        return said + "Only the new classifier trained: there is nothing more to freeze."
    if barely == frozen:
        return said + (f"Training changed the groups it trained from {changes[frozen].group} "
                       "on: freezing more would likely cost accuracy.")  # fmt: skip
    speed = training_cost(changes, frozen, epochs) / training_cost(changes, barely, epochs)
    names = ", ".join(c.group for c in changes[frozen:barely])
    return said + (f"{names} barely changed (CKA ≥ {BARELY} with the pretrained layers): "
                   f"freezing them too would lose little and train about {speed:.1f}× faster "
                   f"over {epochs} epochs (estimated from the time each group takes here).")  # fmt: skip


def trained_epochs(run: str | Path) -> int:
    """The epochs a run was set to train (its ``config.json``), for :func:`freezing_advice`:
    read from the file, without building the model again."""
    from ..runs import CONFIG, read_optional

    config = read_optional(run, CONFIG, {})
    epochs = config.get("epochs") if isinstance(config, dict) else None
    return epochs if isinstance(epochs, int) and epochs > 0 else 10


def training_cost(changes: Sequence[GroupChange], frozen: int, epochs: int) -> float:
    """Milliseconds per picture to train ``epochs`` epochs with the first ``frozen`` groups
    frozen and cached: their forward once, then forward and backward of the rest each epoch."""
    once = sum(c.ms for c in changes[:frozen])
    return once + epochs * 3 * sum(c.ms for c in changes[frozen:]) or 1e-9


def _model_for(source: str | Path):
    """``(model, transform, name)`` of a run folder or a catalog backbone name."""
    from ..data.loaders import build_transform
    from ..models.backbones import CATALOG, create_backbone, data_config
    from ..models.kinds import load_run

    if Path(str(source)).is_dir():
        loaded = load_run(source)
        loaded.kind.require("comparing its layers", loaded.kind.gradients,
                            loaded.record.get("parent"))  # fmt: skip
        return loaded.model, loaded.transform(), Path(source).name
    if str(source) not in CATALOG:
        raise StudioError(f"{source} is neither a run folder nor a catalog backbone")
    model, _ = create_backbone(str(source))
    return model.eval(), build_transform(data_config(model), "none"), str(source)


def compare_layers(a: str | Path, b: str | Path, data: str | Path,
                   max_pictures: int = MAX_PICTURES, seed: int = 0) -> dict:  # fmt: skip
    """CKA between every group of ``a`` and every group of ``b`` (runs or catalog backbones)
    on pictures of ``data``: ``{"a", "b", "groups_a", "groups_b", "cka": rows of a,
    "most_similar": [[group of a, group of b, cka], ...] (for each group of a, its best)}``."""
    from ..data.loaders import prepared
    from ..domain.pictures import load_pictures

    pictures = load_pictures(data, "DATA")
    rng = np.random.default_rng(seed)
    paths = [pictures.paths[i] for i in sorted(rng.permutation(len(pictures.paths))[:max_pictures])]
    outs = []
    for source in (a, b):
        model, tf, name = _model_for(source)
        images = torch.stack([prepared(p, tf) for p in paths])
        groups, out, _ = group_outputs(model, images)
        outs.append((name, [g.name for g in groups if g.name in out], out))
    (na, ga, oa), (nb, gb, ob) = outs
    matrix = [[round(linear_cka(oa[x], ob[y]), 4) for y in gb] for x in ga]
    best = [[x, gb[int(np.argmax(row))], max(row)] for x, row in zip(ga, matrix)]
    return {"a": na, "b": nb, "groups_a": ga, "groups_b": gb, "cka": matrix,
            "most_similar": best, "pictures": len(paths)}  # fmt: skip
