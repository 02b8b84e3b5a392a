"""Fine-tune a backbone on a dataset, as a stream of events.

:func:`train` is one loop, read top to bottom: set up the run folder, load data, build the model,
then for each *phase* (an optional head-only warm-up, then the main phase with the user's freeze
spec) apply the freeze, cache the frozen prefix's outputs when possible, and run epochs that
yield :mod:`studio.events`. Everything a run needs to be repeated (config, seed, split) is saved in
the run folder; ``checkpoint.pt`` after every epoch makes a killed run resumable with
``resume=True`` to the exact same result as an uninterrupted one (every step's random draws are
seeded from the run's seed and the step's number: :mod:`studio.rng`).

The loop's parts (set-up, feeders, optimizer, one epoch, validation) are public in
:mod:`studio.training.loop`; this module is the fine-tuning recipe on top of them, in the order a run
meets it: :func:`_open_run` (new run or resume), :func:`~studio.training.loop.set_up`, the phases
(:func:`_run_phases`: a head solved exactly by :func:`_fit_head_phase`, or epochs by
:func:`_run_phase`), each epoch closed by :func:`_close_epoch` into :class:`_Progress` (history,
best weights, what a checkpoint stores), and :func:`_finish` (evaluate, save the model).
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import events as ev
from ..data.dataset import Dataset
from ..errors import RunError, StudioError
from ..inspection.evaluate import compute_metrics, evaluate_samples
from ..models.backbones import on_classifier_input
from ..models.freeze import apply_freeze, optimizer_groups, parse_freeze
from ..models.kinds import save_model
from ..runs import (
    CHECKPOINT,
    CONFIG,
    DATA_REPORT,
    EVENTS,
    HISTORY,
    LABELS,
    METRICS,
    OBJECTIVE,
    PREPROCESS,
    RUN_INFO,
    SPLIT,
    load_checkpoint,
    load_json,
    save_checkpoint,
    save_history,
    save_json,
)
from .config import TrainConfig
from .distributed import barrier, check_same, ranks, wrap
from .feature_memo import FeatureMemo
from .feature_pass import held_out_probabilities
from .loop import (
    FeederForward,
    Objective,
    RunSetup,
    StopFlag,
    count_correct,
    load_training_data,
    make_feeder,
    make_optimizer,
    make_scheduler,
    make_task_loss,
    select_device,
    set_up,
    train_epoch,
    validate,
)
from .multitask import MultiTaskLoss

__all__ = [
    "TrainConfig",
    "train",
    "run_training",
    "select_device",
    "StopFlag",
    "load_training_data",
    "resume_config",
    "solves_head_exactly",
]

CHECKPOINT_FORMAT = 1
CACHE_FOLDER = ".cache"  # in the run folder: frozen features spilled past the memory bound


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
    tasks = run.dataset.tasks
    single = not any(t.multilabel for t in tasks) if tasks else not run.dataset.multilabel
    return (
        run.cfg.head_solver == "exact"
        and single
        and frozen == body
        and isinstance(classifier, nn.Linear)
    )


def _training_loss(run: RunSetup) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss that is minimised: the task's loss plus, with L2-SP, a pull towards the
    pretrained weights (captured here, before any training or resume changes them)."""
    cfg, model = run.cfg, run.model
    task_loss = run.task_loss
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
        """Add a finished epoch; True when it is the best so far (lowest validation loss, or
        the run's :attr:`Objective.select` score when it has one).

        A row that is not a ``candidate`` (a round of the exact head fit before it ends) is
        history only: the fit keeps its converged solution, not an early, half-solved one.
        """
        self.history.append(row)
        val_loss = row.get("select_score", row["val_loss"])  # an Objective's own score, if any
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
    config: TrainConfig,
    dataset: Dataset | None = None,
    stop: StopFlag | None = None,
    objective: Objective | None = None,
) -> Iterator[ev.Event]:
    """Train a model and yield its progress.

    Args:
        config: What to train; ``config.out`` is the run folder.
        dataset: Already loaded data; loaded from ``config.data`` when None.
        stop: Checked after every batch; when set, the run ends cleanly and keeps the best model.
        objective: A term added to the task's loss at each trained step (distillation's
            teacher); an exact head fit solves the task's loss alone.

    Yields:
        :class:`~studio.events.Started`, then ``Caching``, ``Batch``, ``Epoch`` and ``Checkpoint``
        events, maybe ``Notice`` and ``Stopped``, and finally ``Finished``. On failure an
        ``Error`` event is yielded and the exception re-raised.

    >>> for event in train(TrainConfig(data="assets/example", out="runs/demo")):  # doctest: +SKIP
    ...     print(event.kind)
    """
    run_dir = Path(config.out)
    log_file = None
    main = ranks().main  # with several processes, rank 0 alone keeps the events
    try:
        for event in _train(config, dataset, stop, objective or Objective()):
            if isinstance(event, ev.Started) and main:
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


def _train(
    cfg: TrainConfig, dataset: Dataset | None, stop: StopFlag | None, objective: Objective
) -> Iterator[ev.Event]:
    t_start = time.perf_counter()
    where = ranks()
    cfg, resume_state = _open_run(cfg.validate(), where.main)
    barrier(where)  # the others start once rank 0 has checked and made the run folder
    dataset = load_training_data(cfg, dataset)
    if resume_state is not None and resume_state["split_hash"] != dataset.split_hash():
        raise StudioError("the data changed since this run started; resume needs the same split")
    run = set_up(cfg, dataset)
    if objective.prepare is not None:
        objective.prepare(run.model)
    loss_fn = _training_loss(run)  # before a resume loads trained weights (L2-SP's reference)
    if where.main:
        _write_run_files(run, first=resume_state is None)
        if objective != Objective():  # more than the labels: not continued as a plain run
            save_json(Path(cfg.out) / OBJECTIVE, {"extra_loss": objective.extra_loss is not None,
                                                  "select": objective.select is not None})  # fmt: skip
    progress = _Progress.resume(resume_state, run.model) if resume_state else _Progress()
    if resume_state and resume_state.get("task_loss") and isinstance(run.task_loss, nn.Module):
        run.task_loss.load_state_dict(resume_state["task_loss"])
    phases = _phases(cfg)
    # Staged unfreezing: the head phase trains on the features cached for the later phase (its
    # still-frozen middle layers run forward each epoch), so the pictures are decoded and the
    # frozen prefix computed once for the whole run, not once per phase.
    last_frozen = parse_freeze(phases[-1].freeze, run.groups)
    shared = len(phases) > 1 and bool(last_frozen) and cfg.cache
    stopped = yield from _run_phases(
        run, phases, progress, (loss_fn, objective), resume_state, stop,
        last_frozen if shared else None,
    )  # fmt: skip
    barrier(where)  # every process has closed its share of the cache
    check_same(run.model, where)
    if not progress.history:
        if stopped:
            return  # stopped before the first epoch: there is no model to keep
        raise StudioError("no epoch was trained")
    if where.main:  # the others' work is done: rank 0 measures and saves the model
        yield _finish(run, progress, stopped, time.perf_counter() - t_start)


def _run_phases(run: RunSetup, phases, progress, losses, resume_state, stop, cache_frozen):
    """Each phase in turn: its freeze, its feeder (one feeder for all phases when
    ``cache_frozen`` names the prefix to cache), its epochs. ``losses`` is the task's loss and
    the :class:`Objective`. Returns why it stopped, if it did."""
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
                    run, index, phase, feeder, losses, progress, resume_state, stop
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
    folder, views = Path(run.cfg.out) / CACHE_FOLDER, _auto_views(run)
    # The pretrained backbone's features are shared between runs and the ranking.
    memo = (FeatureMemo(run.cfg.backbone, run.weights, run.data_config)
            if run.cfg.pretrained and run.weights.available else None)  # fmt: skip
    if cache_frozen is None:
        return (yield from make_feeder(run, frozen, folder, stop, views=views, memo=memo))
    apply_freeze(run.model, run.groups, cache_frozen)
    try:
        return (yield from make_feeder(run, cache_frozen, folder, stop, views=views, memo=memo))
    finally:
        apply_freeze(run.model, run.groups, frozen)


def _open_run(cfg: TrainConfig, main: bool = True) -> tuple[TrainConfig, dict | None]:
    """The config to use and, when resuming, the checkpoint; refuses to overwrite a run.
    Only the ``main`` process checks and prepares the folder (the others read it)."""
    run_dir = Path(cfg.out)
    checkpoint_path = run_dir / CHECKPOINT
    if cfg.resume:
        config, state = resume_config(run_dir), load_checkpoint(checkpoint_path)
        if main:  # a killed run's spilled features: computed again, never read (can be GBs)
            shutil.rmtree(run_dir / CACHE_FOLDER, ignore_errors=True)
        return config, state
    if not main:
        return cfg, None
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


def resume_config(run_dir: str | Path) -> TrainConfig:
    """The settings to continue a stopped or killed run with: the ones it was started with
    (``config.json``), ``resume`` set. Raises :class:`StudioError` when the run has no
    checkpoint to continue from (it finished, or never finished an epoch)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise StudioError(f"nothing to resume: {run_dir / CHECKPOINT} does not exist")
    saved = load_json(run_dir / CONFIG)
    if not isinstance(saved, dict):
        raise RunError(f"{run_dir / CONFIG} is damaged (not a settings object)")
    return TrainConfig.from_dict({**saved, "resume": True, "out": str(run_dir)}).validate()


_SET_UP_FILES = (CONFIG, DATA_REPORT, SPLIT, LABELS, PREPROCESS, EVENTS, OBJECTIVE)


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
    labels = {
        "labels": dataset.classes,
        "multilabel": dataset.multilabel,
        "threshold": cfg.threshold,
    }
    if dataset.tasks is not None:
        labels["tasks"] = dataset.tasks.to_json()
    save_json(run_dir / LABELS, labels)
    save_json(run_dir / PREPROCESS, _preprocess_info(run.data_config))


def _run_phase(
    run: RunSetup,
    index: int,
    phase: _Phase,
    feeder,
    losses: tuple[Callable, Objective],
    progress: _Progress,
    resume_state: dict | None,
    stop: StopFlag | None,
):
    """The epochs of one phase, each ending in a checkpoint; returns why it ended early, if so.

    Each phase has its own optimizer and schedule (the trainable parameters differ).
    """
    cfg, model = run.cfg, run.model
    loss_fn, objective = losses
    groups = optimizer_groups(model, run.groups, cfg.lr, cfg.weight_decay, cfg.layer_decay)
    learned = list(run.task_loss.parameters()) if isinstance(run.task_loss, nn.Module) else []
    if learned:  # a multi-task run's learned task weights (never decayed: they are not weights)
        groups.append({"params": learned, "lr": cfg.lr, "weight_decay": 0.0})
    optimizer = make_optimizer(cfg, groups)
    # With several processes, DistributedDataParallel averages the gradients of each step.
    extra = run.task_loss if learned else None
    forward = wrap(FeederForward(model, feeder, extra), run.ranks, run.device)
    steps = feeder.steps_per_epoch()
    scheduler = make_scheduler(cfg, optimizer, steps * phase.epochs, steps)
    if resume_state and int(resume_state["phase"]) == index:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
    # bfloat16 needs no loss scaling; float16 (GPUs before Ampere) does.
    scaler = torch.amp.GradScaler("cuda", enabled=run.amp and not torch.cuda.is_bf16_supported())

    for epoch in range(max(phase.first, progress.done_epochs + 1), phase.last + 1):
        t_epoch = time.perf_counter()
        loss, accuracy, seen, stop_asked = yield from train_epoch(
            run, feeder, loss_fn, optimizer, scheduler, scaler, epoch, stop,
            extra_loss=objective.extra_loss, task_weight=objective.task_weight,
            extra_batches=objective.extra_batches(epoch) if objective.extra_batches else None,
            forward=forward if run.ranks.many else None,
        )  # fmt: skip
        if stop_asked and seen < len(run.train_ds):
            return _STOPPED_BY_USER  # a half epoch is not an epoch: keep the best finished one
        val_loss, val_acc = validate(run, feeder)
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
        if objective.select is not None:
            row["select_score"] = objective.select(model)
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
    if run.ranks.main:  # with several processes, rank 0 alone writes
        save_history(run_dir / HISTORY, progress.history)
        state = progress.checkpoint(model, optimizer, scheduler, index, run.dataset.split_hash())
        if isinstance(run.task_loss, nn.Module):  # learned task weights go on where they were
            state["task_loss"] = {
                k: v.detach().cpu() for k, v in run.task_loss.state_dict().items()
            }
        save_checkpoint(run_dir / CHECKPOINT, state)
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
    """The head solved exactly on the frozen features (studio.training.head_fit): the features of the
    plain training pictures are gathered once, the weight decay chosen by cross-validation, and
    each of the phase's epochs is a round of the solver, reported like an epoch. Returns why it
    ended early, if so."""
    from .head_fit import LinearFit

    cfg, model, tasks = run.cfg, run.model, run.dataset.tasks
    t_start = time.perf_counter()
    x, y = _head_inputs(model, feeder, feeder.plain_train_batches(run.eval_tf))
    x_val, y_val = _head_inputs(model, feeder, feeder.val_batches())
    head = model.get_classifier()
    start = None
    if progress.done_epochs >= phase.first:  # resumed inside the phase: go on from the head
        start = LinearFit(head.weight.detach().float(), head.bias.detach().float(), 0.0)
    epochs = range(max(phase.first, progress.done_epochs + 1), phase.last + 1)
    notice, fits = _head_solution(run, x, y, len(epochs), start)
    yield ev.Notice(notice)
    task_loss = make_task_loss(False, cfg.label_smoothing, tasks)

    def correct(logits, target) -> float:
        return count_correct(logits, target, False, cfg.threshold, tasks) / len(target)

    seconds = time.perf_counter() - t_start
    for epoch, fit in zip(epochs, fits, strict=True):
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
            "train_acc": correct(logits, y),
            "val_loss": None if val_logits is None else float(task_loss(val_logits, y_val)),
            "val_acc": None if val_logits is None else correct(val_logits, y_val),
            "lr": 1.0,  # L-BFGS's step scale; its line search sets the real step
            "seconds": time.perf_counter() - t_round + seconds,
        }
        seconds = 0.0  # the gathering and the cross-validation count in the first round
        yield from _close_epoch(run, index, progress, row, candidate=epoch == phase.last)
        if stop is not None and stop.is_set() and epoch < phase.last:
            return _STOPPED_BY_USER
    return None


def _head_solution(run: RunSetup, x, y, rounds: int, start) -> tuple[str, Iterator]:
    """What the exact fit says it does, and its rounds: one logistic regression, or one per
    task of a multi-task run (studio.training.multitask.fit_heads)."""
    from .head_fit import LinearFit, choose_l2, fit_rounds
    from .multitask import fit_heads

    how = "logistic regression solved by L-BFGS on the frozen features"
    if run.dataset.tasks is not None:
        l2s, fits = fit_heads(x, y, run.dataset.tasks, rounds, run.cfg.seed, start)
        decays = ", ".join(f"{name} {l2:.0e}" for name, l2 in l2s.items())
        return (
            f"fitting each task's last layer exactly ({how}, one per task; weight decay "
            f"{decays}, chosen by cross-validation on the training pictures)",
            fits,
        )
    classes = len(run.dataset.classes)
    l2, scores = choose_l2(x, y, classes, seed=run.cfg.seed)
    chosen = (
        "cross-validation on the training pictures"
        if scores
        else "default (too few pictures per class to cross-validate)"
    )
    notice = f"fitting the last layer exactly ({how}; weight decay {l2:.0e}, chosen by {chosen})"
    if start is not None:
        start = LinearFit(start.weight, start.bias, l2)
    return notice, fit_rounds(x, y, classes, l2, rounds, start)


@torch.no_grad()
def _head_inputs(model: nn.Module, feeder, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """What the classifier receives for each picture of ``batches``, and the targets."""
    seen: list[torch.Tensor] = []
    hook = on_classifier_input(model, lambda f: seen.append(f.detach().float()))
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


def _finish(run: RunSetup, progress: _Progress, stopped: str | None, seconds: float) -> ev.Finished:
    """Keep the best epoch, measure it on held-out data and write the model files."""
    from ..inspection.model_card import write_model_card

    cfg, dataset, run_dir = run.cfg, run.dataset, Path(run.cfg.out)
    progress.restore_best(run.model)
    split, held_out = dataset.held_out()
    if not held_out:
        split, held_out = "train", dataset.train
    probs = held_out_probabilities(run, held_out)  # the data check's features, when they are
    if probs is not None:
        metrics = compute_metrics(held_out, probs, dataset.classes, dataset.multilabel,
                                  cfg.threshold, dataset.tasks)  # fmt: skip
        metrics["split"] = split
    else:
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
            tasks=dataset.tasks,
        )
    save_model(run_dir, run.model.cpu(), backbone=cfg.backbone, num_classes=len(dataset.classes))
    save_json(run_dir / METRICS, metrics)
    save_json(run_dir / RUN_INFO, _run_info(run, progress))
    write_model_card(run_dir)
    if stopped != _STOPPED_BY_USER:
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CACHE_FOLDER, ignore_errors=True)
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
        "processes": run.ranks.world,  # torch.distributed processes that trained it
        # what each task's loss weighed at the end (learned, or 1 each)
        **(
            {"task_weights": run.task_loss.weights()}
            if isinstance(run.task_loss, MultiTaskLoss)
            else {}
        ),
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
