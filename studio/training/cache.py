"""Compute the frozen part of a network once per image, not once per epoch.

When the first layers of a network are frozen, their output for a given image never changes, yet a
plain training loop recomputes it every epoch: on a CPU that is nearly all of the time. This module
finds, for any timm model, the last module whose output depends only on frozen layers (the
*boundary*), stores that output for every image once, and then trains with the frozen modules
skipped and the boundary returning the stored tensor.

The boundary is found from the model's own execution order (forward hooks), not from a table per
architecture; and the result is *verified*: the cached path must reproduce the model's real output
on sample images, otherwise caching is declined with a reason and training runs normally.

With augmentation the stored outputs can only cover a fixed number of augmented *views* per image
(``views``): view 0 is the plain image, the others random augmentations; each epoch picks one view
per image. Augmentation therefore repeats after ``views`` epochs instead of being new every epoch.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["CachePlan", "FeatureStore", "plan_cache", "cached_forward", "run_cached", "fill_store"]


class _Captured(Exception):
    """Raised from the boundary's hook to end a forward pass as soon as the output is known."""

    def __init__(self, output: torch.Tensor):
        self.output = output


@dataclass
class CachePlan:
    """Where to cut the network: the boundary module and the frozen modules to skip."""

    boundary: str
    skipped: list[str]
    feature_shape: tuple[int, ...]
    mode: str = "cut"  # "cut": skip the prefix; "head": features are the classifier's input
    input_shape: tuple[int, ...] = (3, 224, 224)


def _trace_calls(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, str]], dict]:
    """Run ``model(x)`` and record ``("start"|"end", module name)`` in execution order."""
    events: list[tuple[str, str]] = []
    outputs: dict[str, object] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue
        handles.append(
            module.register_forward_pre_hook(lambda m, a, n=name: events.append(("start", n)))
        )

        def after(m, a, out, n=name):
            events.append(("end", n))
            outputs[n] = out
            if a and isinstance(a[0], torch.Tensor):
                outputs[f"<input>{n}"] = a[0]

        handles.append(module.register_forward_hook(after))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return events, outputs


def plan_cache(model: nn.Module, sample: torch.Tensor) -> tuple[CachePlan | None, str]:
    """Find the frozen prefix of ``model`` and check that skipping it gives identical outputs.

    Args:
        model: The model with ``requires_grad`` already set (frozen = False). Put in eval mode
            for the check and left that way.
        sample: A small batch of real, preprocessed images (2 is plenty).

    Returns:
        ``(plan, reason)``: the plan, or None with the reason caching cannot be used.
    """
    model.eval()
    events, outputs = _trace_calls(model, sample)
    modules = dict(model.named_modules())
    trainable = {
        name
        for name, m in modules.items()
        if name and any(p.requires_grad for p in m.parameters(recurse=False))
    }
    if not trainable:
        return None, "nothing is trainable"
    first_trainable = next(
        i for i, (what, n) in enumerate(events) if what == "start" and n in trainable
    )
    calls: dict[str, int] = {}
    for what, n in events:
        if what == "start":
            calls[n] = calls.get(n, 0) + 1
    # The boundary: the last module to finish before anything trainable starts, called only once.
    boundary = None
    for what, n in reversed(events[:first_trainable]):
        if what == "end" and calls[n] == 1 and isinstance(outputs.get(n), torch.Tensor):
            boundary = n
            break
    if boundary is None:
        return None, "no frozen layers come before the trainable ones"
    end_at = events.index(("end", boundary))
    finished_before = {n for what, n in events[:end_at] if what == "end"}
    called_after = {n for what, n in events[end_at + 1 :] if what == "start"}
    ancestors = {boundary.rsplit(".", k)[0] for k in range(1, boundary.count(".") + 1)}
    skippable = finished_before - called_after - ancestors - {boundary}
    skipped = sorted(n for n in skippable if n.rpartition(".")[0] not in skippable or "." not in n)
    feature = outputs[boundary]
    plan = CachePlan(
        boundary, skipped, tuple(feature.shape[1:]), input_shape=tuple(sample.shape[1:])
    )

    # Verify: the cut network must give the same answer as the whole one.
    with torch.no_grad():
        reference = model(sample)
        try:
            with cached_forward(model, plan, feature):
                cut = model(_dummy_like(sample))
            problem = _differs(cut, reference)
        except Exception as exc:  # noqa: BLE001 - any failure means: not cacheable this way
            problem = f"fails ({type(exc).__name__})"
        if problem is None:
            return plan, f"frozen layers up to {boundary} are computed once and cached"
        # Models that mix functional code between modules (ViT's position embedding) cannot be
        # cut mid-way, but when only the classifier trains its input can still be cached.
        head = _classifier_name(model)
        if head and trainable <= {head} | {n for n in trainable if n.startswith(head + ".")}:
            head_input = outputs.get(f"<input>{head}")
            head_plan = CachePlan(head, [], tuple(head_input.shape[1:]), mode="head")
            if _differs(modules[head](head_input), reference) is None:
                return head_plan, "the whole backbone is computed once and cached"
    return None, f"cutting the model after {boundary} {problem}"


def _differs(cut: object, reference: torch.Tensor) -> str | None:
    if not isinstance(cut, torch.Tensor) or cut.shape != reference.shape:
        return "changes the output shape"
    if not torch.allclose(cut, reference, atol=1e-4, rtol=1e-3):
        return "changes the output (the model reuses earlier values)"
    return None


def _classifier_name(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier")
    return name if name in dict(model.named_modules()) else None


def run_cached(model: nn.Module, plan: CachePlan, features: torch.Tensor) -> torch.Tensor:
    """The model's output computed from stored boundary features."""
    if plan.mode == "head":
        return dict(model.named_modules())[plan.boundary](features)
    with cached_forward(model, plan, features):
        return model(_dummy_like_shape(features.shape[0], plan.input_shape, features))


def _dummy_like(sample: torch.Tensor) -> torch.Tensor:
    return _dummy_like_shape(sample.shape[0], tuple(sample.shape[1:]), sample)


def _dummy_like_shape(batch: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A zero input of the image's shape that allocates one image, not a batch: the skipped
    layers never look at it."""
    return torch.zeros((1, *shape), dtype=like.dtype, device=like.device).expand(batch, *shape)


@contextlib.contextmanager
def cached_forward(model: nn.Module, plan: CachePlan, features: torch.Tensor) -> Iterator[None]:
    """Within the block, ``model(dummy)`` skips the frozen prefix and starts from ``features``."""
    modules = dict(model.named_modules())

    def passthrough(*args, **kwargs):
        return args[0] if args else next(iter(kwargs.values()))

    patched = [modules[n] for n in plan.skipped] + [modules[plan.boundary]]
    for m in patched[:-1]:
        m.forward = passthrough
    patched[-1].forward = lambda *a, **k: features
    try:
        yield
    finally:
        for m in patched:
            del m.forward  # the instance attribute shadowed the class method


def capture(model: nn.Module, plan: CachePlan, images: torch.Tensor) -> torch.Tensor:
    """The boundary's output for ``images``; the rest of the network is not computed."""
    boundary = dict(model.named_modules())[plan.boundary]

    def hook(m, a, out):
        raise _Captured(out)

    def pre_hook(m, a):
        raise _Captured(a[0])

    if plan.mode == "head":
        handle = boundary.register_forward_pre_hook(pre_hook)
    else:
        handle = boundary.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(images)
    except _Captured as done:
        return done.output
    finally:
        handle.remove()
    raise RuntimeError(f"{plan.boundary} was not reached")


class FeatureStore:
    """``views x images`` stored boundary outputs, in memory or, past a bound, in a file on disk.

    Pooled features (a few thousand numbers an image) stay in float32; larger intermediate maps
    are kept in float16, which halves memory at no measurable cost in accuracy.
    """

    def __init__(
        self,
        n_images: int,
        views: int,
        shape: tuple[int, ...],
        max_memory_bytes: int,
        disk_dir: str | Path | None = None,
    ):
        self.n_images, self.views, self.shape = n_images, views, shape
        numel = math.prod(shape)
        self.dtype = np.float32 if numel <= 8192 else np.float16
        nbytes = n_images * views * numel * np.dtype(self.dtype).itemsize
        self.nbytes = nbytes
        self.on_disk = nbytes > max_memory_bytes
        full_shape = (views, n_images, *shape)
        if self.on_disk:
            folder = Path(disk_dir or tempfile.gettempdir())
            folder.mkdir(parents=True, exist_ok=True)
            # Kept open for the store's life; closing it deletes the file.
            self._file = tempfile.NamedTemporaryFile(dir=folder, suffix=".features")  # noqa: SIM115
            self.array = np.memmap(self._file.name, dtype=self.dtype, mode="w+", shape=full_shape)
        else:
            self.array = np.empty(full_shape, dtype=self.dtype)

    def put(self, view: int, start: int, features: torch.Tensor) -> None:
        self.array[view, start : start + len(features)] = features.float().cpu().numpy()

    def put_rows(self, view: int, rows: Sequence[int], features) -> None:
        """Features for the images at positions ``rows`` (not necessarily contiguous)."""
        if isinstance(features, torch.Tensor):
            features = features.float().cpu().numpy()
        self.array[view, np.asarray(rows, dtype=np.int64)] = features

    def get(self, view_per_item: np.ndarray, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.array[view_per_item, indices])).float()

    def close(self) -> None:
        if self.on_disk:
            del self.array
            self._file.close()


def fill_store(
    model: nn.Module,
    plan: CachePlan,
    store: FeatureStore,
    batches: Callable[[int], Iterator[torch.Tensor]],
    device: torch.device,
    channels_last: bool = False,
    rows: Callable[[int], Sequence[int] | None] | None = None,
) -> Iterator[int]:
    """Compute every view of every image once; yields the size of each batch as it is stored.

    ``batches(view)`` yields image batches in the store's order; or, where ``rows(view)``
    gives positions, the images at those positions only (the others are filled already). The
    pass runs in channels-last memory format, which convolution kernels on CPUs and GPUs alike
    run faster (about 20% on a 2-core CPU for EfficientNet-Lite0); the model's format is
    restored afterwards.
    """
    model.eval()
    model.to(memory_format=torch.channels_last)
    try:
        for view in range(store.views):
            where = rows(view) if rows is not None else None
            start = 0
            for images in batches(view):
                images = images.to(device, non_blocking=True)
                images = images.contiguous(memory_format=torch.channels_last)
                feats = capture(model, plan, images)
                if where is None:
                    store.put(view, start, feats)
                else:
                    store.put_rows(view, where[start : start + len(images)], feats)
                start += len(images)
                yield len(images)
    finally:
        if not channels_last:
            model.to(memory_format=torch.contiguous_format)
