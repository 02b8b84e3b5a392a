"""Freezing as data: which groups train, at which learning rate, with which weight decay.

A *freeze spec* is a short string, the same in the CLI, the app and ``config.json``:

``none``
    train everything.
``backbone``
    train only the head (the classic "linear probe"; the fastest, and the default).
``3``
    freeze the first three groups (stem, stage1, stage2): "train from group 3 up".
``to:stage4``
    freeze everything up to and including ``stage4``.
``last:2``
    train the last two groups before the head, and the head: "fine-tune the top".
``stem,stage1``
    freeze exactly these groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StudioError
from .backbones import Group

if TYPE_CHECKING:  # torch loads on first use: the app's Model tab reads specs before it
    from torch import nn

__all__ = [
    "HEAD_ONLY",
    "parse_freeze",
    "spec_for_count",
    "apply_freeze",
    "optimizer_groups",
    "keep_frozen_norms_in_eval",
    "count_params",
]


HEAD_ONLY = ("backbone", "all-but-head", "head-only")  # specs that freeze all but the head


def parse_freeze(spec: str | int, groups: list[Group]) -> list[str]:
    """The names of the groups that ``spec`` freezes, in model order.

    Raises:
        StudioError: The spec names a group the model does not have.

    >>> names = ["stem", "stage1", "stage2", "head"]
    >>> groups = [Group(n, (), 0, ()) for n in names]
    >>> parse_freeze("2", groups), parse_freeze("backbone", groups), parse_freeze("to:stage1", groups)
    (['stem', 'stage1'], ['stem', 'stage1', 'stage2'], ['stem', 'stage1'])
    >>> parse_freeze("last:1", groups)
    ['stem', 'stage1']
    """
    names = [g.name for g in groups]
    text = str(spec).strip().lower()
    if text in ("none", "", "0"):
        return []
    if text in HEAD_ONLY:
        return [n for n in names if n != "head"]
    if text.isdigit():
        k = int(text)
        if k >= len(names):
            raise StudioError(
                f"freeze {k} would freeze every group; the model has {len(names)} groups "
                f"({', '.join(names)}), so use at most {len(names) - 1}"
            )
        return names[:k]
    if text.startswith("last:") and text[5:].isdigit():
        body = [n for n in names if n != "head"]
        keep = min(int(text[5:]), len(body))
        return body[: len(body) - keep]
    if text.startswith("to:"):
        last = text[3:]
        if last not in names:
            raise StudioError(f"unknown group {last!r}; groups are {', '.join(names)}")
        return names[: names.index(last) + 1]
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise StudioError(
            f"unknown group(s) {', '.join(unknown)} in freeze spec; "
            f"use none, backbone, a number, to:GROUP, last:N or names from {', '.join(names)}"
        )
    if set(wanted) == set(names):
        raise StudioError("that freezes every group: nothing would be trained")
    return [n for n in names if n in wanted]


def spec_for_count(frozen_count: int, n_groups: int) -> str:
    """The freeze spec for "freeze the first ``frozen_count`` of ``n_groups`` groups" (the
    app's slider), clamped to what the model has: ``backbone`` when only the head trains.

    >>> spec_for_count(3, 9), spec_for_count(8, 9), spec_for_count(99, 9), spec_for_count(-1, 9)
    ('3', 'backbone', 'backbone', '0')
    """
    frozen_count = max(0, min(int(frozen_count), n_groups - 1))
    return "backbone" if frozen_count == n_groups - 1 else str(frozen_count)


def apply_freeze(model: nn.Module, groups: list[Group], frozen: list[str]) -> tuple[int, int]:
    """Set ``requires_grad``; returns ``(trainable, frozen)`` parameter counts."""
    frozen_params = {p for g in groups if g.name in frozen for p in g.params}
    for name, param in model.named_parameters():
        param.requires_grad = name not in frozen_params
    return count_params(model)


def count_params(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Put BatchNorm layers whose weights are frozen in inference mode.

    A frozen BatchNorm in training mode would still update its running mean/variance from the new
    data, silently changing the "frozen" features; call this after every ``model.train()``.
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    for module in model.modules():
        if isinstance(module, _BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def optimizer_groups(
    model: nn.Module,
    groups: list[Group],
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
) -> list[dict]:
    """Parameter groups with layer-wise LR decay and weight decay only on weight matrices.

    Group ``i`` of ``n`` gets ``lr * layer_decay ** (n - 1 - i)``: the head trains at ``lr`` and
    each group towards the input at a smaller rate, so the general early features move least.
    Biases and normalisation parameters (1-D) get no weight decay, as in nanoGPT and timm.
    """
    params = dict(model.named_parameters())
    out = []
    n = len(groups)
    for i, group in enumerate(groups):
        scale = layer_decay ** (n - 1 - i)
        decay = [params[p] for p in group.params if params[p].requires_grad and params[p].ndim >= 2]
        no_decay = [
            params[p] for p in group.params if params[p].requires_grad and params[p].ndim < 2
        ]
        for plist, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if plist:
                out.append(
                    {"params": plist, "lr": lr * scale, "weight_decay": wd, "group": group.name}
                )
    return out
