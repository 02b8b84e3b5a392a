"""Fine-tune a backbone on a dataset, as a stream of events.

:func:`train` is one loop, read top to bottom: set up the run folder, load data, build the model,
then for each *phase* (an optional head-only warm-up, then the main phase with the user's freeze
spec) apply the freeze, cache the frozen prefix's outputs when possible, and run epochs that
yield :mod:`studio.events`. Everything a run needs to be repeated (config, seed, split) is saved in
the run folder; ``checkpoint.pt`` after every epoch makes a killed run resumable with
``resume=True`` to the exact same result as an uninterrupted one (every step's random draws are
seeded from the run's seed and the step's number: :mod:`studio.rng`).

The pieces, in the order a run meets them: :func:`_open_run` (new run or resume),
:func:`set_up` (data, model, transforms; shared with the LR finder), :func:`make_feeder`
(cached frozen-prefix features or images), :func:`_run_phase` and :func:`_train_epoch` (the
epochs, tracked by :class:`_Progress`, which is also what a checkpoint stores), :func:`_finish`.
"""

from __future__ import annotations

import csv
import itertools
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import events as ev
from .backbones import (
    DEFAULT_BACKBONE,
    Group,
    WeightsInfo,
    create_backbone,
    data_config,
    model_groups,
)
from .cache import FeatureStore, fill_store, plan_cache, run_cached
from .data import Dataset, load_dataset
from .errors import RunError, StudioError
from .evaluate import evaluate_samples
from .freeze import apply_freeze, keep_frozen_norms_in_eval, optimizer_groups, parse_freeze
from .images import open_rgb
from .loaders import AUGMENT_PRESETS, ImageSamples, build_transform, image_loader
from .models import save_model
from .rng import seeded, step_seed
from .runs import (
    CHECKPOINT,
    CONFIG,
    DATA_REPORT,
    EVENTS,
    HISTORY,
    LABELS,
    METRICS,
    PREPROCESS,
    RUN_INFO,
    SPLIT,
    load_checkpoint,
    load_json,
    save_checkpoint,
    save_history,
    save_json,
)

__all__ = [
    "TrainConfig",
    "train",
    "run_training",
    "select_device",
    "StopFlag",
    "load_training_data",
    "solves_head_exactly",
    # the pieces the LR finder shares (the seams issue moves them into a loop module)
    "RunSetup",
    "set_up",
    "make_feeder",
    "make_optimizer",
    "make_task_loss",
]

CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``config.json`` so a run can be repeated exactly."""

    data: str = ""
    out: str = "runs/run"
    backbone: str = DEFAULT_BACKBONE
    weights_file: str | None = None
    pretrained: bool = True
    freeze: str = "backbone"
    # How a head on a frozen backbone learns: "exact" solves it (logistic regression to
    # convergence, weight decay by cross-validation: studio.head_fit); "sgd" runs epochs.
    head_solver: str = "exact"
    preset: str = ""  # the preset these settings came from (studio.presets), for the record
    epochs: int = 10
    head_epochs: int = 0  # staged unfreezing: train only the head this many epochs first
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    weight_decay: float = 0.01
    layer_decay: float = 0.75  # layer-wise LR decay; 1.0 = same LR everywhere
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    l2sp: float = 0.0  # pull fine-tuned weights towards their pretrained values (L2-SP)
    augment: str = "light"  # none | light | strong
    patience: int = 5  # early stopping: epochs without a better val loss; 0 = off
    threshold: float = 0.5  # multi-label decision threshold
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    cache: bool = True
    cache_views: int = 0  # augmented views stored per image when caching; 0 = auto
    cache_memory_mb: int = 2048
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA
    channels_last: bool = True  # memory format for CUDA and CPU
    workers: int = -1  # image-decoding processes; -1 = auto
    resume: bool = False

    def validate(self) -> TrainConfig:
        """Raise :class:`StudioError` with a plain reason for any value that cannot work
        (a resumed run's ``config.json`` is checked too: it may have been edited)."""
        for f in fields(self):
            wanted = _FIELD_TYPES.get(str(f.type))
            value = getattr(self, f.name)
            if wanted and (
                not isinstance(value, wanted) or isinstance(value, bool) != (wanted is bool)
            ):
                raise StudioError(f"{f.name} must be {_TYPE_WORDS[str(f.type)]}, not {value!r}")
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (
                0 <= self.head_epochs < self.epochs or self.head_epochs == 0,
                "head epochs must be fewer than epochs",
            ),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (0 < self.lr < 10, "learning rate must be between 0 and 10"),
            (self.optimizer in ("adamw", "sgd"), "optimizer must be adamw or sgd"),
            (self.head_solver in ("exact", "sgd"), "head solver must be exact or sgd"),
            (
                self.schedule in ("cosine", "onecycle", "constant"),
                "schedule must be cosine, onecycle or constant",
            ),
            (0 < self.layer_decay <= 1, "layer decay must be in (0, 1]"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (
                self.augment in AUGMENT_PRESETS,
                f"augment must be one of {', '.join(AUGMENT_PRESETS)}",
            ),
            (
                0 <= self.val_fraction < 1
                and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1,
                "split fractions must sum below 1",
            ),
            (self.weight_decay >= 0 and self.l2sp >= 0, "weight decay and L2-SP must be >= 0"),
            (0 < self.threshold < 1, "threshold must be between 0 and 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise StudioError(message)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_FIELD_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str}
_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text"}


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


# --------------------------------------------------------------------------- feeding batches


class _ImageFeeder:
    """Batches of decoded, transformed images through the whole model."""

    def __init__(
        self,
        train_ds: ImageSamples,
        val_ds: ImageSamples | None,
        cfg: TrainConfig,
        device: torch.device,
        channels_last: bool,
    ):
        self.train_ds, self.val_ds, self.cfg = train_ds, val_ds, cfg
        self.device, self.channels_last = device, channels_last

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_ds) / self.cfg.batch_size)

    def _move(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_batches(self, seed: int):
        # The same seeded order as the cached feeder, so both paths see identical batches.
        order = np.random.default_rng(seed).permutation(len(self.train_ds)).tolist()
        loader = image_loader(
            self.train_ds,
            self.cfg.batch_size,
            sampler=order,
            workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            yield self._move(x), y.to(self.device)

    def val_batches(self):
        if self.val_ds is None:
            return
        for x, y in image_loader(self.val_ds, self.cfg.batch_size, workers=self.cfg.workers):
            yield self._move(x), y.to(self.device)

    def plain_train_batches(self, eval_tf: Callable):
        """The training pictures in order, without augmentation (for the exact head fit)."""
        ds = ImageSamples(self.train_ds.samples, eval_tf, self.train_ds.num_classes, False)
        for x, y in image_loader(ds, self.cfg.batch_size, workers=self.cfg.workers):
            yield self._move(x), y.to(self.device)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def close(self) -> None:
        pass


class _CachedFeeder:
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
    ):
        self.plan, self.train_store, self.val_store = plan, train_store, val_store
        self.train_targets, self.val_targets = train_targets, val_targets
        self.cfg, self.device = cfg, device

    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_store.n_images / self.cfg.batch_size)

    def train_batches(self, seed: int):
        rng = np.random.default_rng(seed)
        n = self.train_store.n_images
        order = rng.permutation(n)
        views = rng.integers(0, self.train_store.views, size=n)
        for start in range(0, n, self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            x = self.train_store.get(views[idx], idx).to(self.device, non_blocking=True)
            yield x, self.train_targets[idx].to(self.device)

    def val_batches(self):
        if self.val_store is not None:
            yield from self._in_order(self.val_store, self.val_targets)

    def plain_train_batches(self, eval_tf: Callable | None = None):
        """The training pictures in order, unaugmented (view 0), for the exact head fit."""
        yield from self._in_order(self.train_store, self.train_targets)

    def _in_order(self, store: FeatureStore, targets: torch.Tensor):
        n = store.n_images
        for start in range(0, n, self.cfg.batch_size):
            idx = np.arange(start, min(n, start + self.cfg.batch_size))
            x = store.get(np.zeros_like(idx), idx).to(self.device)
            yield x, targets[idx].to(self.device)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return run_cached(model, self.plan, x)

    def close(self) -> None:
        self.train_store.close()
        if self.val_store is not None:
            self.val_store.close()


# --------------------------------------------------------------------------- pieces of the loop


def make_task_loss(multilabel: bool, label_smoothing: float):
    """The task's loss, ``loss(logits, targets)``: cross-entropy with label smoothing, or
    binary cross-entropy per tag for multi-label data (no regulariser: see L2-SP)."""
    if multilabel:
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y)
    return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def _correct(logits: torch.Tensor, y: torch.Tensor, multilabel: bool, threshold: float) -> int:
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


def _make_scheduler(cfg: TrainConfig, optimizer, total_steps: int, steps_per_epoch: int):
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


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def _l2sp_penalty(model: nn.Module, reference: dict[str, torch.Tensor], head: set[str]):
    terms = [
        (p - reference[n]).pow(2).sum()
        for n, p in model.named_parameters()
        if p.requires_grad and n not in head and n in reference
    ]
    return torch.stack(terms).sum() if terms else None


@dataclass(frozen=True)
class _Phase:
    """A stretch of epochs with one freeze spec; epochs are numbered from 1 over the whole run."""

    name: str
    freeze: str
    first: int
    last: int

    @property
    def epochs(self) -> int:
        return self.last - self.first + 1


def _phases(cfg: TrainConfig) -> list[_Phase]:
    """fastai's ``fine_tune`` as data: the head alone first when asked, then the user's spec."""
    if cfg.head_epochs and cfg.freeze != "backbone":
        return [
            _Phase("head", "backbone", 1, cfg.head_epochs),
            _Phase("train", cfg.freeze, cfg.head_epochs + 1, cfg.epochs),
        ]
    return [_Phase("train", cfg.freeze, 1, cfg.epochs)]


def _auto_views(run: RunSetup) -> int:
    """Augmented views per cached picture: one when nothing would use more (no augmentation,
    or an exact head fit, which learns from the plain pictures), else the set number or 3."""
    cfg = run.cfg
    if cfg.cache_views > 0:
        return cfg.cache_views
    if cfg.augment == "none" or all(solves_head_exactly(run, ph) for ph in _phases(cfg)):
        return 1
    return 3


def solves_head_exactly(run: RunSetup, phase: _Phase) -> bool:
    """True when this phase trains a linear head alone on a frozen backbone and the config
    asks for the exact solution (single-label data: the fit is a logistic regression)."""
    frozen = set(parse_freeze(phase.freeze, run.groups))
    body = {g.name for g in run.groups if g.name != "head"}
    classifier = getattr(run.model, "get_classifier", lambda: None)()
    return (
        run.cfg.head_solver == "exact"
        and not run.dataset.multilabel
        and frozen == body
        and isinstance(classifier, nn.Linear)
    )


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

    @property
    def amp(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"


def load_training_data(cfg: TrainConfig) -> Dataset:
    """The config's dataset, split by its fractions and seed (what :func:`train` loads when
    it is not given one)."""
    return _load_data(cfg, None)


def _load_data(cfg: TrainConfig, dataset: Dataset | None) -> Dataset:
    if dataset is not None:
        _check_same_data(cfg, dataset)
        return dataset
    if not cfg.data:
        raise StudioError("no dataset given")
    return load_dataset(
        cfg.data, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
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
    if problems:
        raise StudioError(
            "the loaded dataset is not the one the settings describe: " + "; ".join(problems)
        )


def set_up(cfg: TrainConfig, dataset: Dataset | None = None) -> RunSetup:
    """Everything a run (or the LR finder) trains with: data, device, model with its new head,
    layer groups, transforms. Shared so both build the model the same way."""
    dataset = _load_data(cfg, dataset)
    device = select_device(cfg.device)
    classes, multilabel = dataset.classes, dataset.multilabel
    with seeded(cfg.seed):  # the new head's initial weights
        model, weights = create_backbone(
            cfg.backbone, len(classes), pretrained=cfg.pretrained, weights_file=cfg.weights_file
        )
    groups = model_groups(model)
    for phase in _phases(cfg):  # fail on a bad freeze spec before any work
        parse_freeze(phase.freeze, groups)
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
    )


def make_feeder(
    run: RunSetup,
    frozen: list[str],
    cache_folder: Path,
    stop: StopFlag | None = None,
    with_val: bool = True,
):
    """Cached features when a frozen prefix can be cut off, otherwise images.

    A generator: yields ``Caching``/``Notice`` events and returns the feeder, or None when
    stopped while caching.
    """
    cfg = run.cfg
    train_ds, val_ds = run.train_ds, (run.val_ds if with_val else None)
    if not (cfg.cache and frozen):
        return _ImageFeeder(train_ds, val_ds, cfg, run.device, run.channels_last)
    sample = torch.stack([run.eval_tf(open_rgb(s.path)) for s in train_ds.samples[:2]])
    plan, why = plan_cache(run.model, sample.to(run.device))
    if plan is None:
        yield ev.Notice(f"not caching frozen layers: {why}")
        return _ImageFeeder(train_ds, val_ds, cfg, run.device, run.channels_last)
    views = _auto_views(run)
    total = len(train_ds) * views + (len(val_ds) if val_ds else 0)
    done = 0
    yield ev.Caching(0, total)
    stores: list[FeatureStore | None] = []
    for ds, n_views in ((train_ds, views), (val_ds, 1)):
        if ds is None:
            stores.append(None)
            continue
        store = FeatureStore(
            len(ds), n_views, plan.feature_shape, cfg.cache_memory_mb * 1024**2, cache_folder
        )
        stores.append(store)

        def batches(view: int, ds: ImageSamples = ds):
            tf = run.eval_tf if view == 0 else run.train_tf
            view_ds = ImageSamples(ds.samples, tf, ds.num_classes, ds.multilabel)
            loader = iter(image_loader(view_ds, cfg.batch_size, workers=cfg.workers))
            for n in itertools.count():
                with seeded(step_seed(cfg.seed, -1 - view, n)):  # the augmentation's draws
                    x = next(loader, None)
                if x is None:
                    return
                yield x[0]

        for n in fill_store(run.model, plan, store, batches, run.device, run.channels_last):
            done += n
            yield ev.Caching(done, total)
            if stop is not None and stop.is_set():
                for made in stores:
                    if made is not None:
                        made.close()
                return None
    where = "on disk" if stores[0].on_disk else "in memory"
    note = why + f" ({views} view{'s' if views > 1 else ''} per image, {where})"
    if cfg.augment != "none" and views > 1:
        note += f"; augmentation repeats every {views} epochs"
    yield ev.Notice(note)
    return _CachedFeeder(
        plan,
        stores[0],
        stores[1],
        train_ds.targets(),
        val_ds.targets() if val_ds else None,
        cfg,
        run.device,
    )


def _training_loss(run: RunSetup) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss that is minimised: the task's loss plus, with L2-SP, a pull towards the
    pretrained weights (captured here, before any training or resume changes them)."""
    cfg, model = run.cfg, run.model
    task_loss = make_task_loss(run.dataset.multilabel, cfg.label_smoothing)
    if cfg.l2sp <= 0:
        return task_loss
    head = {name for g in run.groups if g.name == "head" for name in g.params}
    reference = {n: p.detach().clone() for n, p in model.named_parameters() if n not in head}

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        penalty = _l2sp_penalty(model, reference, head)
        value = task_loss(logits, y)
        return value if penalty is None else value + cfg.l2sp / 2 * penalty

    return loss


# --------------------------------------------------------------------------- progress


@dataclass
class _Progress:
    """What the finished epochs leave behind: the history and the best epoch with its weights.

    Stored in every checkpoint, so a resumed run goes on exactly where the killed one stopped.
    """

    history: list[dict] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0

    @property
    def done_epochs(self) -> int:
        return self.history[-1]["epoch"] if self.history else 0

    @property
    def kept_epoch(self) -> int:
        """The epoch whose weights the run keeps: the best one, or the last without validation."""
        return self.best_epoch or self.done_epochs

    @classmethod
    def resume(cls, state: dict, model: nn.Module) -> _Progress:
        model.load_state_dict(state["model"], strict=False)  # frozen parts stay pretrained
        best = state["best"]
        progress = cls(
            list(state["history"]),
            best["loss"],
            best["epoch"],
            best.get("state"),
            int(state["bad_epochs"]),
        )
        if progress.best_state is None and progress.best_epoch == progress.done_epochs:
            progress.best_state = _cpu_state(model)
        return progress

    def record(self, row: dict, model: nn.Module, candidate: bool = True) -> bool:
        """Add a finished epoch; True when it is the best so far (lowest validation loss).

        A row that is not a ``candidate`` (a round of the exact head fit before it ends) is
        history only: the fit keeps its converged solution, not an early, half-solved one.
        """
        self.history.append(row)
        val_loss = row["val_loss"]
        if val_loss is None or not candidate:
            return False
        if val_loss < self.best_loss - 1e-6:
            self.best_loss, self.best_epoch = val_loss, row["epoch"]
            self.best_state = _cpu_state(model)
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    def checkpoint(self, model, optimizer, scheduler, phase_index: int, split_hash: str) -> dict:
        epoch = self.done_epochs
        return {
            "format": CHECKPOINT_FORMAT,
            "model": _mutable_state(model),
            "optimizer": optimizer.state_dict() if optimizer else {},
            "scheduler": scheduler.state_dict() if scheduler else {},
            "phase": phase_index,
            "epoch": epoch,
            # The best weights are stored only when they differ from the current ones.
            "best": {
                "loss": self.best_loss,
                "epoch": self.best_epoch,
                "state": None if self.best_epoch == epoch else self.best_state,
            },
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "split_hash": split_hash,
        }

    def restore_best(self, model: nn.Module) -> None:
        if self.best_state is not None and self.best_epoch != self.done_epochs:
            model.load_state_dict(self.best_state)


# --------------------------------------------------------------------------- the run


def train(
    config: TrainConfig, dataset: Dataset | None = None, stop: StopFlag | None = None
) -> Iterator[ev.Event]:
    """Train a model and yield its progress.

    Args:
        config: What to train; ``config.out`` is the run folder.
        dataset: Already loaded data; loaded from ``config.data`` when None.
        stop: Checked after every batch; when set, the run ends cleanly and keeps the best model.

    Yields:
        :class:`~studio.events.Started`, then ``Caching``, ``Batch``, ``Epoch`` and ``Checkpoint``
        events, maybe ``Notice`` and ``Stopped``, and finally ``Finished``. On failure an
        ``Error`` event is yielded and the exception re-raised.

    >>> for event in train(TrainConfig(data="assets/example", out="runs/demo")):  # doctest: +SKIP
    ...     print(event.kind)
    """
    run_dir = Path(config.out)
    log_file = None
    try:
        for event in _train(config, dataset, stop):
            if isinstance(event, ev.Started):
                log_file = open(run_dir / EVENTS, "a")  # noqa: SIM115 - closed below
            if log_file is not None and not isinstance(event, ev.Batch | ev.Caching):
                log_file.write(event.to_json() + "\n")
                log_file.flush()
            yield event
    except StudioError as exc:
        yield ev.Error(str(exc), bad_input=True)
        raise
    except Exception as exc:
        error = ev.Error(f"{type(exc).__name__}: {exc}", bad_input=False)
        if log_file is not None:
            log_file.write(error.to_json() + "\n")
        yield error
        raise
    finally:
        if log_file is not None:
            log_file.close()


def run_training(config: TrainConfig, dataset: Dataset | None = None) -> ev.Finished:
    """Train to the end without looking at progress; returns the ``Finished`` event."""
    finished = None
    for event in train(config, dataset):
        if isinstance(event, ev.Finished):
            finished = event
    assert finished is not None
    return finished


_STOPPED_BY_USER = "stopped by user"


def _train(cfg: TrainConfig, dataset: Dataset | None, stop: StopFlag | None) -> Iterator[ev.Event]:
    t_start = time.perf_counter()
    cfg, resume_state = _open_run(cfg.validate())
    dataset = _load_data(cfg, dataset)
    if resume_state is not None and resume_state["split_hash"] != dataset.split_hash():
        raise StudioError("the data changed since this run started; resume needs the same split")
    run = set_up(cfg, dataset)
    loss_fn = _training_loss(run)  # before a resume loads trained weights (L2-SP's reference)
    _write_run_files(run, first=resume_state is None)
    progress = _Progress.resume(resume_state, run.model) if resume_state else _Progress()
    phases = _phases(cfg)
    # Staged unfreezing: the head phase trains on the features cached for the later phase (its
    # still-frozen middle layers run forward each epoch), so the pictures are decoded and the
    # frozen prefix computed once for the whole run, not once per phase.
    last_frozen = parse_freeze(phases[-1].freeze, run.groups)
    shared = len(phases) > 1 and bool(last_frozen) and cfg.cache
    stopped = yield from _run_phases(
        run, phases, progress, loss_fn, resume_state, stop, last_frozen if shared else None
    )
    if not progress.history:
        if stopped:
            return  # stopped before the first epoch: there is no model to keep
        raise StudioError("no epoch was trained")
    yield _finish(run, progress, stopped, time.perf_counter() - t_start)


def _run_phases(run: RunSetup, phases, progress, loss_fn, resume_state, stop, cache_frozen):
    """Each phase in turn: its freeze, its feeder (one feeder for all phases when
    ``cache_frozen`` names the prefix to cache), its epochs. Returns why it stopped, if it did."""
    cfg, dataset, run_dir = run.cfg, run.dataset, Path(run.cfg.out)
    stopped, started, feeder = None, False, None
    try:
        for index, phase in enumerate(phases):
            if progress.done_epochs >= phase.last:
                continue  # finished before the resume
            frozen = parse_freeze(phase.freeze, run.groups)
            trainable, frozen_count = apply_freeze(run.model, run.groups, frozen)
            if not started:
                started = True
                yield ev.Started(
                    str(run_dir),
                    cfg.to_dict(),
                    dataset.classes,
                    {k: len(v) for k, v in dataset.splits.items()},
                    str(run.device),
                    run.weights.note,
                    trainable,
                    frozen_count,
                    progress.done_epochs,
                )
                for warning in dataset.report.warnings:
                    yield ev.Notice(warning)
            elif phase.name == "train":
                yield ev.Notice(f"unfreezing: now training {trainable:,} parameters")

            if feeder is None or cache_frozen is None:  # else the shared feeder serves on
                if feeder is not None:
                    feeder.close()
                    feeder = None
                feeder = yield from _feeder_for(run, frozen, cache_frozen, stop)
            if feeder is None:
                stopped = _STOPPED_BY_USER  # while caching
            elif solves_head_exactly(run, phase):
                stopped = yield from _fit_head_phase(run, index, phase, feeder, progress, stop)
            else:
                stopped = yield from _run_phase(
                    run, index, phase, feeder, loss_fn, progress, resume_state, stop
                )
            if stopped:
                yield ev.Stopped(stopped, progress.done_epochs)
                break
    finally:
        if feeder is not None:
            feeder.close()
    return stopped


def _feeder_for(run: RunSetup, frozen: list[str], cache_frozen: list[str] | None, stop):
    """The phase's feeder; with ``cache_frozen``, one caching that prefix, which the cache plan
    reads from ``requires_grad``: that freeze is applied while planning, then the phase's own."""
    if cache_frozen is None:
        return (yield from make_feeder(run, frozen, Path(run.cfg.out) / ".cache", stop))
    apply_freeze(run.model, run.groups, cache_frozen)
    try:
        return (yield from make_feeder(run, cache_frozen, Path(run.cfg.out) / ".cache", stop))
    finally:
        apply_freeze(run.model, run.groups, frozen)


def _open_run(cfg: TrainConfig) -> tuple[TrainConfig, dict | None]:
    """The config to use and, when resuming, the checkpoint; refuses to overwrite a run."""
    run_dir = Path(cfg.out)
    checkpoint_path = run_dir / CHECKPOINT
    if cfg.resume:
        if not checkpoint_path.is_file():
            raise StudioError(f"nothing to resume: {checkpoint_path} does not exist")
        saved = load_json(run_dir / CONFIG)
        if not isinstance(saved, dict):
            raise RunError(f"{run_dir / CONFIG} is damaged (not a settings object)")
        config = TrainConfig.from_dict({**saved, "resume": True, "out": str(run_dir)})
        return config.validate(), load_checkpoint(checkpoint_path)
    if (run_dir / CONFIG).exists() and not _never_set_up(run_dir):
        hint = (
            " (it has a checkpoint: add --resume to continue it)"
            if checkpoint_path.exists()
            else ""
        )
        raise StudioError(f"{run_dir} already holds a run{hint}; choose another output folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in _SET_UP_FILES:  # what a set-up that failed or was killed left behind
        (run_dir / name).unlink(missing_ok=True)
    return cfg, None


_SET_UP_FILES = (CONFIG, DATA_REPORT, SPLIT, LABELS, PREPROCESS, EVENTS)


def _never_set_up(run_dir: Path) -> bool:
    """A folder whose run failed (or was killed) before its first epoch ended: no checkpoint,
    no model, nothing but the files the set-up writes. Retrying into it must not be refused."""
    return all(p.name in _SET_UP_FILES for p in run_dir.iterdir())


def _write_run_files(run: RunSetup, first: bool) -> None:
    """What a classroom needs to repeat the run (config, data report, split) and a program
    needs to use its model (labels, preprocessing)."""
    run_dir, cfg, dataset = Path(run.cfg.out), run.cfg, run.dataset
    if first:
        save_json(run_dir / CONFIG, {**cfg.to_dict(), "resume": False})
        save_json(run_dir / DATA_REPORT, dataset.report.to_dict())
        # Paths are kept byte for byte (a name that is not UTF-8 stays as it is on disk).
        with open(run_dir / SPLIT, "w", newline="", errors="surrogateescape") as fh:
            writer = csv.writer(fh)
            writer.writerow(["split", "path", "labels"])
            writer.writerows(dataset.split_rows())
    save_json(
        run_dir / LABELS,
        {"labels": dataset.classes, "multilabel": dataset.multilabel, "threshold": cfg.threshold},
    )
    save_json(run_dir / PREPROCESS, _preprocess_info(run.data_config))


def _run_phase(
    run: RunSetup,
    index: int,
    phase: _Phase,
    feeder,
    loss_fn,
    progress: _Progress,
    resume_state: dict | None,
    stop: StopFlag | None,
):
    """The epochs of one phase, each ending in a checkpoint; returns why it ended early, if so.

    Each phase has its own optimizer and schedule (the trainable parameters differ).
    """
    cfg, model = run.cfg, run.model
    optimizer = make_optimizer(
        cfg, optimizer_groups(model, run.groups, cfg.lr, cfg.weight_decay, cfg.layer_decay)
    )
    steps = feeder.steps_per_epoch()
    scheduler = _make_scheduler(cfg, optimizer, steps * phase.epochs, steps)
    if resume_state and int(resume_state["phase"]) == index:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
    # bfloat16 needs no loss scaling; float16 (GPUs before Ampere) does.
    scaler = torch.amp.GradScaler("cuda", enabled=run.amp and not torch.cuda.is_bf16_supported())

    for epoch in range(max(phase.first, progress.done_epochs + 1), phase.last + 1):
        t_epoch = time.perf_counter()
        loss, accuracy, seen, stop_asked = yield from _train_epoch(
            run, feeder, loss_fn, optimizer, scheduler, scaler, epoch, stop
        )
        if stop_asked and seen < len(run.train_ds):
            return _STOPPED_BY_USER  # a half epoch is not an epoch: keep the best finished one
        val_loss, val_acc = _validate(run, feeder)
        row = {
            "epoch": epoch,
            "phase": phase.name,
            "train_loss": loss,
            "train_acc": accuracy,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[-1]["lr"],
            "seconds": time.perf_counter() - t_epoch,
        }
        yield from _close_epoch(run, index, progress, row, optimizer, scheduler)
        if stop_asked:
            return _STOPPED_BY_USER
        if cfg.patience and progress.bad_epochs >= cfg.patience:
            return f"early stopping: validation loss has not improved for {cfg.patience} epochs"
    return None


def _close_epoch(
    run: RunSetup, index: int, progress, row: dict, optimizer=None, scheduler=None, candidate=True
):
    """Record a finished epoch (history and checkpoint) and yield its ``Epoch`` and
    ``Checkpoint`` events; shared by trained epochs and the exact fit's rounds."""
    model, run_dir = run.model, Path(run.cfg.out)
    improved = progress.record(row, model, candidate)
    save_history(run_dir / HISTORY, progress.history)
    save_checkpoint(
        run_dir / CHECKPOINT,
        progress.checkpoint(model, optimizer, scheduler, index, run.dataset.split_hash()),
    )
    yield ev.Epoch(
        row["epoch"],
        run.cfg.epochs,
        row["train_loss"],
        row["train_acc"],
        row["val_loss"],
        row["val_acc"],
        row["lr"],
        row["seconds"],
        improved,
        row["phase"],
    )
    yield ev.Checkpoint(str(run_dir / CHECKPOINT), row["epoch"])


def _fit_head_phase(run: RunSetup, index: int, phase: _Phase, feeder, progress, stop):
    """The head solved exactly on the frozen features (studio.head_fit): the features of the
    plain training pictures are gathered once, the weight decay chosen by cross-validation, and
    each of the phase's epochs is a round of the solver, reported like an epoch. Returns why it
    ended early, if so."""
    from .head_fit import LinearFit, choose_l2, fit_rounds

    cfg, model, classes = run.cfg, run.model, len(run.dataset.classes)
    t_start = time.perf_counter()
    x, y = _head_inputs(model, feeder, feeder.plain_train_batches(run.eval_tf))
    x_val, y_val = _head_inputs(model, feeder, feeder.val_batches())
    l2, scores = choose_l2(x, y, classes, seed=cfg.seed)
    how = (
        "cross-validation on the training pictures"
        if scores
        else "default (too few pictures per class to cross-validate)"
    )
    yield ev.Notice(
        f"fitting the last layer exactly (logistic regression solved by L-BFGS on the frozen "
        f"features; weight decay {l2:.0e}, chosen by {how})"
    )
    head = model.get_classifier()
    start = None
    if progress.done_epochs >= phase.first:  # resumed inside the phase: go on from the head
        start = LinearFit(head.weight.detach().float(), head.bias.detach().float(), l2)
    epochs = range(max(phase.first, progress.done_epochs + 1), phase.last + 1)
    task_loss = make_task_loss(False, cfg.label_smoothing)
    seconds = time.perf_counter() - t_start
    for epoch, fit in zip(epochs, fit_rounds(x, y, classes, l2, len(epochs), start), strict=True):
        t_round = time.perf_counter()
        with torch.no_grad():
            head.weight.copy_(fit.weight)
            head.bias.copy_(fit.bias)
            logits = x @ fit.weight.T + fit.bias
            val_logits = x_val @ fit.weight.T + fit.bias if len(y_val) else None
        row = {
            "epoch": epoch,
            "phase": phase.name,
            "train_loss": float(task_loss(logits, y)),
            "train_acc": _correct(logits, y, False, cfg.threshold) / len(y),
            "val_loss": None if val_logits is None else float(task_loss(val_logits, y_val)),
            "val_acc": None
            if val_logits is None
            else _correct(val_logits, y_val, False, cfg.threshold) / len(y_val),
            "lr": 1.0,  # L-BFGS's step scale; its line search sets the real step
            "seconds": time.perf_counter() - t_round + seconds,
        }
        seconds = 0.0  # the gathering and the cross-validation count in the first round
        yield from _close_epoch(run, index, progress, row, candidate=epoch == phase.last)
        if stop is not None and stop.is_set() and epoch < phase.last:
            return _STOPPED_BY_USER
    return None


@torch.no_grad()
def _head_inputs(model: nn.Module, feeder, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """What the classifier receives for each picture of ``batches``, and the targets."""
    seen: list[torch.Tensor] = []
    hook = model.get_classifier().register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].detach().float().flatten(1))
    )
    model.eval()
    targets = []
    try:
        for x, y in batches:
            feeder.forward(model, x)
            targets.append(y)
    finally:
        hook.remove()
    if not targets:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(seen), torch.cat(targets)


def _train_epoch(run: RunSetup, feeder, loss_fn, optimizer, scheduler, scaler, epoch: int, stop):
    """One pass over the training batches, yielding a ``Batch`` event per step.

    Returns ``(mean loss, accuracy, images seen, whether a stop was asked)``.
    """
    cfg, model = run.cfg, run.model
    model.train()
    keep_frozen_norms_in_eval(model)
    steps = feeder.steps_per_epoch()
    total_loss, correct, seen = 0.0, 0, 0
    batches = feeder.train_batches(_epoch_seed(cfg.seed, epoch))
    for n in range(1, steps + 1):
        # Decoding (augmentation) and the step (dropout) draw from the global generators:
        # seeded per batch, under the lock that keeps other runs' draws out (studio.rng).
        with seeded(step_seed(cfg.seed, epoch, n)):
            batch = next(batches, None)
            if batch is None:
                break
            x, y = batch
            with _autocast(run.device, run.amp):
                logits = feeder.forward(model, x)
                loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
        total_loss += float(loss.detach()) * len(y)
        correct += _correct(logits.detach(), y, run.dataset.multilabel, cfg.threshold)
        seen += len(y)
        yield ev.Batch(epoch, n, steps, float(loss.detach()))
        if stop is not None and stop.is_set():
            break
    stop_asked = stop is not None and stop.is_set()
    return total_loss / max(1, seen), correct / max(1, seen), seen, stop_asked


def _finish(run: RunSetup, progress: _Progress, stopped: str | None, seconds: float) -> ev.Finished:
    """Keep the best epoch, measure it on held-out data and write the model files."""
    from .export import write_model_card

    cfg, dataset, run_dir = run.cfg, run.dataset, Path(run.cfg.out)
    progress.restore_best(run.model)
    split, held_out = dataset.held_out()
    if not held_out:
        split, held_out = "train", dataset.train
    metrics = evaluate_samples(
        run.model,
        held_out,
        run.eval_tf,
        dataset.classes,
        dataset.multilabel,
        run.device,
        threshold=cfg.threshold,
        batch_size=cfg.batch_size,
        channels_last=run.channels_last,
        split=split,
    )
    save_model(run_dir, run.model.cpu(), backbone=cfg.backbone, num_classes=len(dataset.classes))
    save_json(run_dir / METRICS, metrics)
    save_json(run_dir / RUN_INFO, _run_info(run, progress))
    write_model_card(run_dir)
    if stopped != _STOPPED_BY_USER:
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    shutil.rmtree(run_dir / ".cache", ignore_errors=True)
    return ev.Finished(str(run_dir), metrics, progress.kept_epoch, seconds)


def _run_info(run: RunSetup, progress: _Progress) -> dict:
    """How the run went and with what: the model card and the run list read it."""
    import platform

    import timm

    dataset = run.dataset
    return {
        "best_epoch": progress.kept_epoch,
        "epochs_run": len(progress.history),
        "weights": run.weights.note,
        "split_hash": dataset.split_hash(),
        "data_root": str(dataset.root),
        "classes": dataset.classes,
        "sizes": {k: len(v) for k, v in dataset.splits.items()},
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _mutable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The part of the state that training can have changed: trainable parameters and the
    buffers (BatchNorm statistics) of modules that have them.

    Frozen weights equal the pretrained ones the run starts from, so a checkpoint for a frozen
    backbone holds the head alone: kilobytes, not the whole network, written every epoch.
    """
    keep = set()
    for prefix, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if any(p.requires_grad for _, p in own):
            dot = f"{prefix}." if prefix else ""
            keep.update(dot + n for n, p in own if p.requires_grad)
            keep.update(dot + n for n, _ in module.named_buffers(recurse=False))
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in keep}


@torch.no_grad()
def _validate(run: RunSetup, feeder) -> tuple[float | None, float | None]:
    """Validation loss and accuracy (the task's loss alone, without L2-SP); None without data."""
    model, multilabel = run.model, run.dataset.multilabel
    loss_fn = make_task_loss(multilabel, run.cfg.label_smoothing)
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in feeder.val_batches():
        with _autocast(run.device, run.amp):
            logits = feeder.forward(model, x).float()
        total_loss += float(loss_fn(logits, y)) * len(y)
        correct += _correct(logits, y, multilabel, run.cfg.threshold)
        seen += len(y)
    if not seen:
        return None, None
    return total_loss / seen, correct / seen


def _preprocess_info(dcfg: dict) -> dict:
    size = dcfg["input_size"]
    crop_pct = dcfg.get("crop_pct", 0.875)
    return {
        "input_size": list(size),
        "resize": int(math.floor(size[-1] / crop_pct)),
        "crop": size[-1],
        "crop_pct": crop_pct,
        "interpolation": dcfg.get("interpolation", "bilinear"),
        "mean": list(dcfg["mean"]),
        "std": list(dcfg["std"]),
        "channel_order": "RGB",
        "layout": "NCHW",
        "how": "resize the shorter side to 'resize', center-crop 'crop' x 'crop', scale pixels "
        "to 0..1, subtract mean and divide by std per channel",
    }
