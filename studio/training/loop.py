"""The training loop's pieces, public, for every kind of run that trains a model.

Fine-tuning (:mod:`studio.training.train`), the LR finder, and the runs still to come (distillation,
compression's recovery fine-tune, domain adaptation) build from the same parts, in this order:

1. :func:`set_up` -- a :class:`~studio.training.config.TrainConfig` made concrete: the data (loaded, or
   checked to be the one named), the device, the model with its new head, its layer groups and
   transforms (:class:`RunSetup`).
2. :func:`make_feeder` -- where batches come from (a :class:`Feeder`): the frozen prefix's
   outputs computed once and stored (:class:`CachedFeeder`), or pictures decoded every epoch
   (:class:`ImageFeeder`). It yields ``Caching`` events; :func:`without_events` runs it quietly.
3. :func:`make_optimizer`, :func:`make_scheduler`, :func:`make_task_loss` -- per-group
   learning rates (:mod:`studio.models.freeze`), the schedule, the task's loss.
4. :func:`train_epoch` -- one pass with a ``Batch`` event per step, every step's random draws
   seeded from the run's seed and the step's number (:mod:`studio.rng`). Its hooks take what
   other runs add: ``extra_loss`` (a teacher's logits, a domain discrepancy) and
   ``extra_batches`` (a second stream, such as unlabelled pictures).
5. :func:`validate` -- validation loss and accuracy with the task's loss alone.

What a run does between epochs (keeping the best weights, checkpoints, early stopping, the run
folder) is the recipe's, not the loop's: see :mod:`studio.training.train`. A run that trains a
new model the usual way and only changes what a step minimises hands ``train()`` an
:class:`Objective` (distillation's teacher, adaptation's domain term and second stream) and
gets the whole recipe: phases, cache, checkpoints, Stop and resume. Each step knows which
training pictures it holds (:attr:`Step.indices`, from the feeder's ``train_order``), so
per-picture values computed once (a teacher's answers, importance weights) line up.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import events as ev
from ..data.dataset import Dataset, load_dataset
from ..data.loaders import ImageSamples, build_transform, image_loader, prepared
from ..data.tasks import Tasks
from ..errors import StudioError
from ..models.backbones import Group, WeightsInfo, create_backbone, data_config, model_groups
from ..models.freeze import keep_frozen_norms_in_eval, parse_freeze
from ..rng import seeded, step_seed
from .cache import FeatureStore, capture, fill_store, plan_cache, run_cached
from .config import TrainConfig
from .distributed import (
    Ranks,
    any_rank,
    device_for,
    epoch_order,
    ranks,
    share_of,
    share_rows,
    sum_all,
)
from .feature_memo import FeatureMemo
from .feature_pass import PooledFeatures
from .multitask import MultiTaskLoss, count_correct_tasks

__all__ = [
    "StopFlag",
    "Feeder",
    "Step",
    "Objective",
    "FeederForward",
    "RunSetup",
    "ImageFeeder",
    "CachedFeeder",
    "select_device",
    "epoch_seed",
    "load_training_data",
    "set_up",
    "make_feeder",
    "without_events",
    "make_task_loss",
    "count_correct",
    "make_optimizer",
    "make_scheduler",
    "autocast",
    "train_epoch",
    "validate",
]

T = TypeVar("T")


class StopFlag(Protocol):
    """What a loop checks between steps (a :class:`threading.Event` is one)."""

    def is_set(self) -> bool: ...


class Feeder(Protocol):
    """Where a loop's batches come from: decoded pictures through the whole model
    (:class:`ImageFeeder`) or a frozen prefix's stored outputs through the rest
    (:class:`CachedFeeder`). ``forward`` runs the model on what the feeder gives; ``batch`` is
    the size of this process's batches."""

    batch: int

    def steps_per_epoch(self) -> int: ...

    def train_order(self, seed: int) -> np.ndarray: ...

    def train_batches(self, seed: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...

    def val_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...

    def plain_train_batches(
        self, eval_tf: Callable | None = None
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


@dataclass
class Step:
    """What an extra loss term sees at one training step (see :func:`train_epoch`)."""

    model: nn.Module
    x: torch.Tensor  # the feeder's input: pictures, or a frozen prefix's outputs
    y: torch.Tensor
    logits: torch.Tensor
    extra: Any  # this step's item of the extra stream, if any
    epoch: int
    n: int  # the step's number within the epoch, from 1
    # Positions in the training split of this step's pictures (a teacher's cached logits are
    # looked up by them), from the feeder's own order for the epoch.
    indices: np.ndarray | None = None


@dataclass(frozen=True)
class Objective:
    """What a run minimises besides its task's loss: an extra term per step (a teacher's soft
    targets, a domain discrepancy) and the task loss's weight in the mix. See
    :func:`train_epoch`; the default is the task's loss alone."""

    extra_loss: Callable[[Step], torch.Tensor] | None = None
    task_weight: float = 1.0
    # Called with the model once it is built, before any step (to hook a layer, say).
    prepare: Callable[[nn.Module], None] | None = None
    # A second stream for each epoch (``extra_batches(epoch)``: unlabelled pictures, say).
    extra_batches: Callable[[int], Iterator] | None = None
    # The score (lower is better) that picks the epoch kept, instead of the validation loss:
    # adaptation's labelled new pictures, which measure but never train.
    select: Callable[[nn.Module], float] | None = None


class FeederForward(nn.Module):
    """A feeder's forward pass as a module, so that DistributedDataParallel can wrap it: DDP
    syncs the gradients of what it wraps, and a cached feeder runs only the model's tail.
    ``extra`` holds parameters trained beside the model (a multi-task run's learned task
    weights), so that they are averaged over processes too."""

    def __init__(self, model: nn.Module, feeder: Feeder, extra: nn.Module | None = None):
        super().__init__()
        self.model, self.extra, self.feeder = model, extra, feeder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feeder.forward(self.model, x)


def without_events(gen: Generator[Any, None, T]) -> T:
    """Run an event generator (such as :func:`make_feeder`) for its result alone."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


# --------------------------------------------------------------------------- feeding batches


def _val_share(n: int, where: Ranks) -> list[int] | None:
    """The validation pictures this process measures (every ``world``-th; None: all of them)."""
    return share_of(range(n), where) if where.many else None


def _order(n: int, seed: int, where: Ranks) -> np.ndarray:
    """An epoch's order of ``n`` training pictures (this process's share, with several)."""
    if where.many:
        return epoch_order(n, seed, where)
    return np.random.default_rng(seed).permutation(n)


class ImageFeeder:
    """Batches of decoded, transformed images through the whole model.

    With several processes (``ranks``), each feeds its share of every epoch and of the
    validation pictures, in batches of its share of the batch size
    (:mod:`studio.training.distributed`)."""

    def __init__(
        self,
        train_ds: ImageSamples,
        val_ds: ImageSamples | None,
        cfg: TrainConfig,
        device: torch.device,
        channels_last: bool,
        ranks: Ranks = Ranks(),  # noqa: B008 - frozen, shared default
    ):
        self.train_ds, self.val_ds, self.cfg = train_ds, val_ds, cfg
        self.device, self.channels_last, self.ranks = device, channels_last, ranks
        self.batch = ranks.share(cfg.batch_size)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_order(0)) / self.batch)

    def _move(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_order(self, seed: int) -> np.ndarray:
        """The epoch's order of the training pictures, the same as the cached feeder's, so
        both paths see identical batches."""
        return _order(len(self.train_ds), seed, self.ranks)

    def train_batches(self, seed: int):
        loader = image_loader(
            self.train_ds,
            self.batch,
            sampler=self.train_order(seed).tolist(),
            workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            yield self._move(x), y.to(self.device)

    def val_batches(self):
        if self.val_ds is None:
            return
        share = _val_share(len(self.val_ds), self.ranks)
        loader = image_loader(self.val_ds, self.batch, sampler=share, workers=self.cfg.workers)
        for x, y in loader:
            yield self._move(x), y.to(self.device)

    def plain_train_batches(self, eval_tf: Callable):
        """The training pictures in order, without augmentation (for the exact head fit)."""
        ds = ImageSamples(self.train_ds.samples, eval_tf, self.train_ds.num_classes, False)
        for x, y in image_loader(ds, self.batch, workers=self.cfg.workers):
            yield self._move(x), y.to(self.device)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def close(self) -> None:
        pass


class CachedFeeder:
    """Batches of stored frozen-prefix outputs; only the trainable rest of the model runs."""

    def __init__(
        self,
        plan,
        train_store: FeatureStore,
        val_store: FeatureStore | None,
        train_targets: torch.Tensor,
        val_targets: torch.Tensor | None,
        cfg: TrainConfig,
        device: torch.device,
        ranks: Ranks = Ranks(),  # noqa: B008 - frozen, shared default
    ):
        self.plan, self.train_store, self.val_store = plan, train_store, val_store
        self.train_targets, self.val_targets = train_targets, val_targets
        self.cfg, self.device, self.ranks = cfg, device, ranks
        self.batch = ranks.share(cfg.batch_size)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_order(0)) / self.batch)

    def train_order(self, seed: int) -> np.ndarray:
        return _order(self.train_store.n_images, seed, self.ranks)

    def train_batches(self, seed: int):
        rng = np.random.default_rng(seed)
        n = self.train_store.n_images
        order = rng.permutation(n)  # train_order's draw, then each picture's view
        views = rng.integers(0, self.train_store.views, size=n)
        if self.ranks.many:
            order = self.train_order(seed)
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            x = self.train_store.get(views[idx], idx).to(self.device, non_blocking=True)
            yield x, self.train_targets[idx].to(self.device)

    def val_batches(self):
        if self.val_store is not None:
            share = _val_share(self.val_store.n_images, self.ranks)
            yield from self._in_order(self.val_store, self.val_targets, share)

    def plain_train_batches(self, eval_tf: Callable | None = None):
        """The training pictures in order, unaugmented (view 0), for the exact head fit (all of
        them, in every process: each solves the same fit)."""
        yield from self._in_order(self.train_store, self.train_targets)

    def _in_order(self, store: FeatureStore, targets: torch.Tensor, only=None):
        positions = np.arange(store.n_images) if only is None else np.asarray(only, np.int64)
        for start in range(0, len(positions), self.batch):
            idx = positions[start : start + self.batch]
            x = store.get(np.zeros_like(idx), idx).to(self.device)
            yield x, targets[idx].to(self.device)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return run_cached(model, self.plan, x)

    def close(self) -> None:
        self.train_store.close()
        if self.val_store is not None:
            self.val_store.close()


# --------------------------------------------------------------------------- pieces of the loop


def make_task_loss(
    multilabel: bool, label_smoothing: float, tasks: Tasks | None = None, learned: bool = False
):
    """The task's loss, ``loss(logits, targets)``: cross-entropy with label smoothing, or
    binary cross-entropy per tag for multi-label data (no regulariser: see L2-SP); with
    ``tasks``, one per task, averaged or weighted by learned uncertainty when ``learned``
    (:class:`~studio.training.multitask.MultiTaskLoss`)."""
    if tasks is not None:
        return MultiTaskLoss(tasks, label_smoothing, learned)
    if multilabel:
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y)
    return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def count_correct(
    logits: torch.Tensor,
    y: torch.Tensor,
    multilabel: bool,
    threshold: float,
    tasks: Tasks | None = None,
) -> float:
    """Pictures answered right (with ``tasks``: each scores the share of its tasks right)."""
    if tasks is not None:
        return count_correct_tasks(logits, y, tasks, threshold)
    if multilabel:
        return int(((logits.sigmoid() >= threshold) == (y > 0.5)).all(1).sum())
    return int((logits.argmax(1) == y).sum())


def make_optimizer(cfg: TrainConfig, param_groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum, over per-group learning rates (freeze.py)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def _warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up, then cosine down to 1% of the peak."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(cfg: TrainConfig, optimizer, total_steps: int, steps_per_epoch: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps
        )
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_cosine(step, total_steps, warmup)
    )


def autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


# --------------------------------------------------------------------------- setting up


@dataclass
class RunSetup:
    """A config made concrete: data, device, the model and its transforms.

    Shared by training and the LR finder, so both see the same model and the same inputs.
    """

    cfg: TrainConfig
    dataset: Dataset
    device: torch.device
    model: nn.Module
    weights: WeightsInfo
    groups: list[Group]
    data_config: dict
    eval_tf: Callable
    train_tf: Callable
    channels_last: bool
    train_ds: ImageSamples
    val_ds: ImageSamples | None
    # What the task's loss is: one for the run, since a multi-task run's learned task weights
    # (studio.training.multitask) train with the model and are kept in its checkpoints.
    task_loss: Callable | None = None
    # This process's place among several (studio.training.distributed); one by default.
    ranks: Ranks = Ranks()  # noqa: RUF009 - frozen, shared default

    @property
    def amp(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"


def load_training_data(
    cfg: TrainConfig,
    dataset: Dataset | None = None,
    progress: Callable[[int, int], None] | None = None,
    features: bool = False,
) -> Dataset:
    """The config's dataset, split by its fractions and seed; a ``dataset`` already loaded
    (to save decoding it again) is checked to be that one and returned. ``progress(done,
    total)`` follows the check of the pictures. With ``features``, the check's decode of each
    picture also gives the pretrained backbone's features, when the run will read them
    (:mod:`studio.training.feature_pass`): the training then finds them computed."""
    if dataset is not None:
        _check_same_data(cfg, dataset)
        return dataset
    if not cfg.data:
        raise StudioError("no dataset given")
    return load_dataset(
        cfg.data,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        tasks=cfg.task_columns(),
        progress=progress,
        looker=PooledFeatures.for_config(cfg) if features else None,
    )


def _check_same_data(cfg: TrainConfig, dataset: Dataset) -> None:
    """A dataset handed in already loaded (to save decoding it again) must be the one the
    config names, split as the config says: ``config.json`` records the config, and a resume
    or a repeat of the run loads the data from it."""
    problems = []
    if cfg.data:
        named = Path(cfg.data).expanduser().resolve()
        if named not in (Path(dataset.report.source).expanduser().resolve(), dataset.root):
            problems.append(f"the settings name {cfg.data}, the pictures are {dataset.root}")
    if dataset.seed != cfg.seed:
        problems.append(f"it was split with seed {dataset.seed}, the settings say {cfg.seed}")
    if dataset.fractions != (cfg.val_fraction, cfg.test_fraction):
        problems.append(
            f"it holds back {dataset.fractions} (validation, test), the settings say "
            f"{(cfg.val_fraction, cfg.test_fraction)}"
        )
    asked, held = cfg.task_columns(), dataset.tasks.names if dataset.tasks else None
    if asked and asked != held:
        problems.append(f"it holds the tasks {held}, the settings ask for {asked}")
    if problems:
        raise StudioError(
            "the loaded dataset is not the one the settings describe: " + "; ".join(problems)
        )


def set_up(
    cfg: TrainConfig,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
    source: str = "",
) -> RunSetup:
    """Everything a run (or the LR finder) trains with: data, device, model with its new head,
    layer groups, transforms. Shared so both build the model the same way.

    ``model`` trains a model made elsewhere instead of a new backbone (a pruned model's
    recovery, a student), with ``source`` saying where it came from."""
    dataset = load_training_data(cfg, dataset)
    where = ranks()
    device = device_for(select_device(cfg.device), where)
    classes, multilabel = dataset.classes, dataset.multilabel
    if model is not None:
        weights = WeightsInfo("file", None, source or "a model given to train")
    else:
        with seeded(cfg.seed):  # the new head's initial weights
            model, weights = create_backbone(
                cfg.backbone, len(classes), pretrained=cfg.pretrained, weights_file=cfg.weights_file
            )
    groups = model_groups(model)
    parse_freeze(cfg.freeze, groups)  # fail on a bad freeze spec before any work
    dcfg = data_config(model)
    eval_tf = build_transform(dcfg, "none")
    train_tf = build_transform(dcfg, cfg.augment, training=True)
    # Channels-last is faster for convolutions on GPUs and, with oneDNN, on CPUs too (1.6x for
    # full fine-tuning on a 2-core CPU: benchmarks/bench_channels_last.py); MPS is left alone.
    channels_last = cfg.channels_last and device.type in ("cuda", "cpu")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return RunSetup(
        cfg,
        dataset,
        device,
        model,
        weights,
        groups,
        dcfg,
        eval_tf,
        train_tf,
        channels_last,
        ImageSamples(dataset.train, train_tf, len(classes), multilabel),
        ImageSamples(dataset.val, eval_tf, len(classes), multilabel) if dataset.val else None,
        make_task_loss(
            multilabel, cfg.label_smoothing, dataset.tasks, cfg.task_weights == "uncertainty"
        ),
        where,
    )


def _view_batches(run: RunSetup, ds: ImageSamples, view: int, only: list[int] | None):
    """Image batches of ``ds`` (only the positions ``only``, when given) for cache view
    ``view``: 0 the plain pictures, the others augmented, each batch's draws seeded."""
    cfg = run.cfg
    tf = run.eval_tf if view == 0 else run.train_tf
    samples = ds.samples if only is None else [ds.samples[i] for i in only]
    if not samples:
        return
    view_ds = ImageSamples(samples, tf, ds.num_classes, ds.multilabel)
    loader = iter(image_loader(view_ds, cfg.batch_size, workers=cfg.workers))
    for n in itertools.count():
        with seeded(step_seed(cfg.seed, -1 - view, n)):  # the augmentation's draws
            x = next(loader, None)
        if x is None:
            return
        yield x[0]


class _Known:
    """What a feature memo already holds for each part (training, validation pictures)."""

    def __init__(self, memo: FeatureMemo | None, sha1s: list, found: list[dict]):
        self.memo, self.sha1s, self.found = memo, sha1s, found
        self.reused = sum(len(f) for f in found)

    def fill(self, part: int, store: FeatureStore) -> list[int] | None:
        """Put the known features of ``part`` in view 0; the positions left to compute (None:
        no memo, compute everything as usual)."""
        if self.memo is None or part >= len(self.found):
            return None
        found = self.found[part]
        if found:
            rows = sorted(found)
            store.put_rows(0, rows, np.stack([found[i] for i in rows]))
        return [i for i in range(len(self.sha1s[part])) if i not in found]

    def keep(self, part: int, store: FeatureStore, computed: list[int] | None) -> None:
        if self.memo is not None and computed:
            sha1s = self.sha1s[part]
            self.memo.put_many([sha1s[i] for i in computed], store.array[0, computed])


def _from_memo(run: RunSetup, plan, memo: FeatureMemo | None, parts, frozen) -> _Known:
    """The memo's features for the plain pictures of each part, when the whole backbone is
    frozen (what is cached is then the classifier's input: a vector per picture) and once two
    of them agree with this model's own pass: a memo that does not hold this model's features
    is left alone (and rewritten by this run's pass)."""
    body = {g.name for g in run.groups if g.name != "head"}
    if memo is None or len(plan.feature_shape) != 1 or not body <= set(frozen):
        return _Known(None, [], [])
    from ..data.facts import facts_of

    sha1s = [[facts_of(s.path).sha1 for s in ds.samples] if ds is not None else []
             for ds in parts]  # fmt: skip
    found = [memo.get_many(part) for part in sha1s]
    checks = [(p, i) for p, f in enumerate(found) for i in sorted(f)][:2]
    if checks:
        x = torch.stack([prepared(parts[p].samples[i].path, run.eval_tf) for p, i in checks])
        fresh = capture(run.model, plan, x.to(run.device)).float().cpu().numpy()
        if not FeatureMemo.agrees(np.stack([found[p][i] for p, i in checks]), fresh):
            return _Known(memo, sha1s, [{} for _ in parts])
    return _Known(memo, sha1s, found)


def make_feeder(
    run: RunSetup,
    frozen: list[str],
    cache_folder: Path,
    stop: StopFlag | None = None,
    with_val: bool = True,
    views: int = 1,
    memo: FeatureMemo | None = None,
) -> Generator[ev.Event, None, Feeder | None]:
    """Cached features when a frozen prefix can be cut off, otherwise images.

    A generator: yields ``Caching``/``Notice`` events and returns the feeder, or None when
    stopped while caching (:func:`without_events` runs it for a caller that shows nothing).
    ``views`` is the number of versions of each training picture cached: the plain one, then
    augmented ones, a different one each epoch. With ``memo`` (the pretrained backbone's
    features by picture, :mod:`studio.training.feature_memo`) and the whole backbone frozen, the
    plain pictures it holds are not computed again, and those computed here are kept in it.
    With several processes each computes its share and all of them end up holding the whole
    cache (:func:`_fill_part`).
    """
    cfg, where = run.cfg, run.ranks
    train_ds, val_ds = run.train_ds, (run.val_ds if with_val else None)
    if not (cfg.cache and frozen):
        return ImageFeeder(train_ds, val_ds, cfg, run.device, run.channels_last, where)
    sample = torch.stack([prepared(s.path, run.eval_tf) for s in train_ds.samples[:2]])
    plan, why = plan_cache(run.model, sample.to(run.device))
    if plan is None:
        yield ev.Notice(f"not caching frozen layers: {why}")
        return ImageFeeder(train_ds, val_ds, cfg, run.device, run.channels_last, where)
    known = _from_memo(run, plan, memo, (train_ds, val_ds), frozen)
    if known.reused:
        yield ev.Notice(f"{known.reused} picture(s) already seen by this backbone (as they "
                        "were checked, ranked or trained on before): their features are "
                        "reused")  # fmt: skip

    def known_in(part: int) -> int:
        return len(known.found[part]) if part < len(known.found) else 0

    # Pictures to compute per view (training views, then validation); this process's share.
    counts = [len(train_ds) - known_in(0)] + [len(train_ds)] * (views - 1)
    counts += [len(val_ds) - known_in(1)] if val_ds else []
    progress = [0, sum(len(range(where.rank, c, where.world)) for c in counts)]  # done, to do
    yield ev.Caching(0, progress[1])
    if where.many:
        cache_folder = cache_folder / f"rank{where.rank}"
    stores: list[FeatureStore | None] = []
    for part, (ds, n_views) in enumerate(((train_ds, views), (val_ds, 1))):
        if ds is None:
            stores.append(None)
            continue
        store = FeatureStore(
            len(ds), n_views, plan.feature_shape, cfg.cache_memory_mb * 1024**2, cache_folder
        )
        stores.append(store)
        missing = known.fill(part, store)  # positions still to compute in view 0, or None
        if not (yield from _fill_part(run, plan, store, ds, missing, stop, progress)):
            for made in stores:
                if made is not None:
                    made.close()
            return None
        if where.main:
            known.keep(part, store, missing)
    size = sum(store.nbytes for store in stores if store is not None) / 1024**2
    place = (f"{size:,.0f} MB on disk in {cache_folder}, past the {cfg.cache_memory_mb:,} MB "
             "kept in memory; removed when the run ends" if stores[0].on_disk
             else f"{size:,.0f} MB in memory")  # fmt: skip
    note = why + f" ({views} view{'s' if views > 1 else ''} per image, {place})"
    if cfg.augment != "none" and views > 1:
        note += f"; augmentation repeats every {views} epochs"
    yield ev.Notice(note)
    return CachedFeeder(
        plan,
        stores[0],
        stores[1],
        train_ds.targets(),
        val_ds.targets() if val_ds else None,
        cfg,
        run.device,
        where,
    )


def _fill_part(run: RunSetup, plan, store: FeatureStore, ds: ImageSamples, missing, stop,
               progress: list[int]):  # fmt: skip
    """Compute ``store`` for the pictures of ``ds`` (view 0: only the ``missing`` positions,
    when given), yielding ``Caching`` events; False when stopped. With several processes each
    computes every ``world``-th picture, then they exchange what they computed; a stop asked
    in any of them stops all (they agree before the exchange)."""
    where = run.ranks

    def needed(view: int):  # positions the view still needs (None: all, in order)
        return missing if view == 0 else None

    def mine(view: int):
        need = needed(view)
        if not where.many:
            return need
        return share_of(range(len(ds)) if need is None else need, where)

    def batches(view: int):
        return _view_batches(run, ds, view, mine(view))

    stopped = False
    for n in fill_store(run.model, plan, store, batches, run.device, run.channels_last, mine):
        progress[0] += n
        yield ev.Caching(progress[0], progress[1])
        if stop is not None and stop.is_set():
            stopped = True
            break
    if any_rank(stopped, where):
        return False
    for view in range(store.views) if where.many else ():
        need = needed(view)
        share_rows(store, view, range(len(ds)) if need is None else need, where)
    return True


def train_epoch(
    run: RunSetup,
    feeder: Feeder,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    epoch: int,
    stop: StopFlag | None,
    extra_loss: Callable[[Step], torch.Tensor] | None = None,
    extra_batches: Iterator | None = None,
    task_weight: float = 1.0,
    forward: nn.Module | None = None,
) -> Generator[ev.Batch, None, tuple[float, float, int, bool]]:
    """One pass over the training batches, yielding a ``Batch`` event per step.

    ``extra_loss(step)`` adds a term to each step's loss (distillation: the distance to a
    teacher's logits; adaptation: a discrepancy between two domains' features); it sees the
    step's model, inputs, targets, logits and the positions of its pictures in the training
    split, and the step's item of ``extra_batches`` (a second stream, for example unlabelled
    pictures; ``None`` once it runs out). The task's own loss is weighted by ``task_weight``
    (distillation's mix of hard and soft targets). ``forward`` (a :class:`FeederForward`,
    maybe in DistributedDataParallel) computes the logits instead of ``feeder.forward``.

    Returns ``(mean loss, accuracy, images seen, whether a stop was asked)``, over all
    processes when there are several (which then stop after the same step).
    """
    cfg, model, where = run.cfg, run.model, run.ranks
    (forward or model).train()
    keep_frozen_norms_in_eval(model)
    steps = feeder.steps_per_epoch()
    total_loss, correct, seen = 0.0, 0, 0
    batches = iter(feeder.train_batches(epoch_seed(cfg.seed, epoch)))
    order = feeder.train_order(epoch_seed(cfg.seed, epoch)) if extra_loss is not None else None
    for n in range(1, steps + 1):
        # Decoding (augmentation) and the step (dropout) draw from the global generators:
        # seeded per batch, under the lock that keeps other runs' draws out (studio.rng).
        with seeded(step_seed(cfg.seed, epoch, n)):
            batch = next(batches, None)
            if batch is None:
                break
            x, y = batch
            extra = next(extra_batches, None) if extra_batches is not None else None
            with autocast(run.device, run.amp):
                logits = forward(x) if forward is not None else feeder.forward(model, x)
                loss = loss_fn(logits.float(), y) * task_weight
                if extra_loss is not None:
                    at = order[(n - 1) * feeder.batch : n * feeder.batch]
                    loss = loss + extra_loss(Step(model, x, y, logits, extra, epoch, n, at))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
        total_loss += float(loss.detach()) * len(y)
        correct += count_correct(
            logits.detach(), y, run.dataset.multilabel, cfg.threshold, run.dataset.tasks
        )
        seen += len(y)
        yield ev.Batch(epoch, n, steps, float(loss.detach()))
        if any_rank(stop is not None and stop.is_set(), where):
            break
    stop_asked = any_rank(stop is not None and stop.is_set(), where)
    total_loss, correct, seen = sum_all([total_loss, correct, seen], where)
    return total_loss / max(1, seen), correct / max(1, seen), int(seen), stop_asked


@torch.no_grad()
def validate(run: RunSetup, feeder) -> tuple[float | None, float | None]:
    """Validation loss and accuracy (the task's loss alone, without L2-SP; several tasks'
    losses averaged, never weighted by what the run learns, so epochs compare); None without
    data."""
    model, multilabel, tasks = run.model, run.dataset.multilabel, run.dataset.tasks
    loss_fn = make_task_loss(multilabel, run.cfg.label_smoothing, tasks)
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in feeder.val_batches():
        with autocast(run.device, run.amp):
            logits = feeder.forward(model, x).float()
        total_loss += float(loss_fn(logits, y)) * len(y)
        correct += count_correct(logits, y, multilabel, run.cfg.threshold, tasks)
        seen += len(y)
    total_loss, correct, seen = sum_all([total_loss, correct, seen], run.ranks)
    if not seen:
        return None, None
    return total_loss / seen, correct / seen
