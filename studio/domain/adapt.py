"""Domain adaptation: train with labelled source pictures and unlabelled new (target) ones.

The adapted model is trained like the run it comes from (:func:`studio.training.train.train`:
the run's backbone, settings, split and seed, so the run itself is the *source-only* model to
compare with), with one term added to each step (an :class:`~studio.training.loop.Objective`):

- ``coral`` / ``dan``: Deep CORAL or multi-kernel MMD (:mod:`studio.domain.losses`) between the
  features the classifier reads for the step's source pictures and for a batch of target
  pictures (the ``extra_batches`` stream: target pictures, augmented as the source ones are,
  reshuffled each epoch and repeated as needed);
- ``dann``: a small domain classifier on those features behind a gradient-reversal layer whose
  weight ramps up over training (it has its own optimizer, stepped at the next step with the
  gradients this one left: it is not part of the saved model);
- ``reweight``: no target stream; each source picture's loss is weighted by ``p(target | x) /
  p(source | x)`` from a logistic regression on the run's own features (the density ratio,
  normalised to mean 1, clipped to [0.1, 10]), looked up by the step's picture positions.

The features come from a hook on the classifier's input, so the methods work on any catalog
backbone and with the frozen-prefix cache (the target batch runs through the whole model). A
run whose backbone was frozen whole is adapted with its last group trainable (``last:1``): the
features must be able to move. Labelled target pictures (``eval``) never train: they choose the
epoch kept (their accuracy, through :attr:`Objective.select`) and measure source-only against
adapted accuracy, per class, and the MMD between the source's and the target's features
before (the run's) and after (the adapted model's).
"""

from __future__ import annotations

import itertools
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import events as ev
from ..data.dataset import Sample
from ..data.images import ImageProblem, open_rgb
from ..data.loaders import build_transform, prepared
from ..errors import StudioError
from ..inspection.evaluate import evaluate_samples
from ..models.backbones import data_config, on_classifier_input
from ..models.freeze import HEAD_ONLY
from ..models.kinds import LoadedRun, load_run, mark_derived
from ..runs import (
    ADAPTATION_SETTINGS,
    CHECKPOINT,
    METRICS,
    read_optional,
    require_empty_folder,
    save_json,
)
from ..training.config import TrainConfig
from ..training.loop import Objective, Step, epoch_seed
from ..training.train import train
from .losses import GradientReversal, coral_loss, dann_weight, mk_mmd_loss
from .pictures import PictureSet, load_pictures
from .shift import Embedder, permutation_test

__all__ = ["METHODS", "ADAPTATION", "adapt_run", "resume_adaptation", "density_weights"]

METHODS = ("dan", "dann", "coral", "reweight")
ADAPTATION = "adaptation.json"
SETTINGS = ADAPTATION_SETTINGS  # what a resume must repeat


def _readable(pictures: PictureSet) -> PictureSet:
    """The pictures that decode (the others named); none is a plain error."""
    kept, skipped = [], []
    for i, path in enumerate(pictures.paths):
        try:
            open_rgb(path)
            kept.append(i)
        except (ImageProblem, OSError) as exc:
            skipped.append((path, str(exc)))
    if not kept:
        raise StudioError(f"none of the pictures in {pictures.root} could be read")
    return pictures.keep(kept, skipped)


class _TargetStream:
    """Batches of target pictures for each epoch, augmented like the source, never ending."""

    def __init__(self, paths: list[str], cfg: TrainConfig):
        self.paths, self.cfg, self.transform = paths, cfg, None

    def prepare(self, model: nn.Module) -> None:
        self.transform = build_transform(data_config(model), self.cfg.augment, training=True)

    def __call__(self, epoch: int) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng(epoch_seed(self.cfg.seed, epoch) + 7)
        size = self.cfg.batch_size
        for _ in itertools.count():
            order = rng.permutation(len(self.paths))
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                if len(chunk) < 2 and len(order) >= 2:
                    continue  # a batch of one has no covariance or distances
                yield torch.stack([prepared(self.paths[i], self.transform) for i in chunk])


class _DomainTerm:
    """The method's extra loss at one step, from the classifier's input features."""

    def __init__(self, method: str, weight: float, cfg: TrainConfig, steps: int, lr: float):
        self.method, self.weight, self.cfg, self.steps, self.lr = method, weight, cfg, steps, lr
        self.seen: list[torch.Tensor] = []
        self.critic: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def prepare(self, model: nn.Module) -> None:
        head = model.get_classifier()
        on_classifier_input(model, self.seen.append)
        if self.method == "dann":
            width = head.in_features
            self.critic = nn.Sequential(nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 1))
            self.critic.to(head.weight.device)
            self.optimizer = torch.optim.AdamW(self.critic.parameters(), lr=self.lr)

    def __call__(self, step: Step) -> torch.Tensor:
        source = self.seen[-1]
        self.seen.clear()
        target_x = step.extra.to(source.device)
        step.model(target_x)  # the hook catches the target features
        target = self.seen.pop()
        if self.method == "coral":
            return self.weight * coral_loss(source.float(), target.float())
        if self.method == "dan":
            return self.weight * mk_mmd_loss(source.float(), target.float())
        return self.weight * self._adversarial(step, source, target)

    def _adversarial(self, step: Step, source: torch.Tensor, target: torch.Tensor):
        assert self.critic is not None and self.optimizer is not None
        if any(p.grad is not None for p in self.critic.parameters()):  # the previous step's
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        progress = ((step.epoch - 1) + step.n / self.steps) / self.cfg.epochs
        z = GradientReversal.apply(torch.cat([source, target]).float(), dann_weight(progress))
        domain = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(z.device)
        return F.binary_cross_entropy_with_logits(self.critic(z).squeeze(1), domain)


def density_weights(source: np.ndarray, target: np.ndarray, seed: int = 0) -> np.ndarray:
    """``p(target | x) / p(source | x)`` for each source row, times ``n_source / n_target``,
    from a logistic regression; normalised to mean 1 and clipped to [0.1, 10]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z = np.concatenate([source, target])
    d = np.r_[np.zeros(len(source)), np.ones(len(target))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    p = clf.fit(z, d).predict_proba(source)[:, 1].clip(1e-4, 1 - 1e-4)
    w = p / (1 - p) * len(source) / len(target)
    w = np.clip(w / w.mean(), 0.1, 10.0)
    return w / w.mean()


def _reweight_objective(parent: LoadedRun, train_paths, target: PictureSet, seed: int):
    embedder = Embedder.from_run(parent)
    source = PictureSet(Path(parent.config["data"]), list(train_paths), [None] * len(train_paths))
    xs, _, kept = embedder.embed(source)
    if len(kept.paths) != len(train_paths):
        raise StudioError("some training pictures could not be read again; check the data")
    xt, _, _ = embedder.embed(target)
    weights = torch.from_numpy(density_weights(xs, xt, seed)).float()

    def extra_loss(step: Step) -> torch.Tensor:
        w = weights[step.indices].to(step.logits.device)
        each = F.cross_entropy(step.logits.float(), step.y, reduction="none")
        return ((w - 1.0) * each).mean()  # the task loss becomes the weighted mean

    return Objective(extra_loss), weights


def _check_folder(out: Path, settings: dict, resume: bool) -> None:
    """A new run needs an empty folder; a resumed one the same run, pictures and method."""
    if resume:
        saved = read_optional(out, SETTINGS)
        if saved is None:
            raise StudioError(f"nothing to resume: {out} holds no adaptation")
        changed = [k for k in settings if saved.get(k) != settings[k]]
        if changed:
            raise StudioError(f"resume with the same {', '.join(changed)} as the stopped run")
    else:
        require_empty_folder(out)


def _config(parent: LoadedRun, out: Path, epochs, seed, freeze) -> tuple[TrainConfig, str | None]:
    cfg = {**parent.config, "out": str(out), "head_solver": "sgd", "preset": "",
           "resume": False}  # fmt: skip
    note = None
    if freeze is None and str(parent.config.get("freeze", "")).strip().lower() in HEAD_ONLY:
        freeze = "last:1"
        note = "the run froze its whole backbone; adapting with its last group trainable"
    for key, value in (("epochs", epochs), ("seed", seed), ("freeze", freeze)):
        if value is not None:
            cfg[key] = value
    return TrainConfig.from_dict(cfg).validate(), note


def _selector(evaluation: list[Sample] | None, labels: list[str]):
    """Minus the accuracy on the labelled new pictures: the score that picks the epoch kept."""
    if not evaluation:
        return None

    def select(model: nn.Module) -> float:
        transform = build_transform(data_config(model), "none")
        device = next(model.parameters()).device
        metrics = evaluate_samples(model, evaluation, transform, labels, False, device,
                                   split="eval")  # fmt: skip
        return -metrics["accuracy"]

    return select


def _labelled(pictures: PictureSet, labels: list[str]) -> list[Sample]:
    if not pictures.labelled:
        raise StudioError("the pictures given to evaluate on must be in class folders")
    unknown = set(pictures.classes) - set(labels)
    if unknown:
        raise StudioError(f"--eval has classes the run does not know: {', '.join(sorted(unknown))}")
    return [Sample(p, (labels.index(c),)) for p, c in zip(pictures.paths, pictures.labels)]


def _measure(parent: LoadedRun, out: Path, train_paths, target, evaluation) -> dict:
    """Source-only against adapted: accuracy on the labelled target pictures (when given) and
    the MMD between the source and target features in each model's own feature space."""
    adapted = load_run(out)
    record = {}
    source = PictureSet(Path(parent.config["data"]), list(train_paths), [None] * len(train_paths))
    for name, loaded in (("source_only", parent), ("adapted", adapted)):
        embedder = Embedder.from_run(loaded)
        xs, _, _ = embedder.embed(source)
        xt, _, _ = embedder.embed(target)
        mmd, p, _ = permutation_test(xs, xt, 200)
        record[name] = {"mmd": mmd, "p_value": p}
        if evaluation:
            metrics = evaluate_samples(loaded.model, evaluation, loaded.transform(),
                                       loaded.labels, False, torch.device("cpu"),
                                       split="eval")  # fmt: skip
            record[name].update(accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"],
                                per_class=metrics.get("per_class"))  # fmt: skip
            if name == "adapted":
                save_json(out / METRICS, metrics)
    return record


def _objective(method, weight, parent, cfg, train_paths, target, evaluation):
    """The method's :class:`Objective` (its notes yielded), with the labelled new pictures, when
    given, choosing the epoch kept."""
    select = _selector(evaluation, parent.labels)
    if select is not None:
        yield ev.Notice("the labelled new pictures choose the epoch kept (they never train)")
    if method == "reweight":
        yield ev.Notice("weighting each training picture by how much it looks like the new ones")
        objective, _ = _reweight_objective(parent, train_paths, target, cfg.seed)
        return Objective(objective.extra_loss, select=select)
    steps = math.ceil(len(train_paths) / cfg.batch_size)
    term = _DomainTerm(method, weight, cfg, steps, cfg.lr)
    stream = _TargetStream(target.paths, cfg)

    def prepare(model: nn.Module) -> None:
        term.prepare(model)
        stream.prepare(model)

    return Objective(term, 1.0, prepare, stream, select)


def adapt_run(
    run_dir: str | Path,
    target_dir: str | Path,
    out: str | Path,
    method: str = "coral",
    *,
    eval_dir: str | Path | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    weight: float = 1.0,
    freeze: str | None = None,
    resume: bool = False,
    stop=None,
) -> Iterator[ev.Event]:
    """Adapt ``run_dir``'s model to the pictures in ``target_dir`` into a new run ``out``;
    yields the training's events, then ``Finished`` (``adaptation.json`` holds the comparison).

    A stop keeps the best finished epoch and its checkpoint (the comparison is written for
    it); ``resume=True`` with the same run, pictures and method goes on from there."""
    begin = time.perf_counter()
    if method not in METHODS:
        raise StudioError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    if not weight > 0:
        raise StudioError(f"the adaptation weight must be above 0, not {weight}")
    parent = load_run(run_dir)
    parent.kind.require("adapting", parent.kind.gradients, parent.record.get("parent"))
    if parent.tasks is not None:
        names = ", ".join(parent.tasks.names)
        raise StudioError(
            f"adaptation works on single-task runs for now; this run has several tasks ({names})"
        )
    if parent.multilabel:
        raise StudioError("adaptation works on single-label runs; this run is multi-label")
    out = Path(out)
    settings = {"run": str(parent.run_dir), "target": str(Path(target_dir)), "method": method,
                "weight": weight, "eval": str(Path(eval_dir)) if eval_dir else None}  # fmt: skip
    _check_folder(out, settings, resume)
    target = _readable(load_pictures(target_dir, "--target"))
    if len(target.paths) < 2:
        raise StudioError("adaptation needs at least 2 new pictures (a batch compares several)")
    evaluation = _labelled(load_pictures(eval_dir, "--eval"), parent.labels) if eval_dir else None
    dataset = parent.dataset()
    cfg, note = _config(parent, out, epochs, seed, freeze)
    cfg.resume = resume
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / SETTINGS, settings)
    if note:
        yield ev.Notice(note)
    train_paths = [s.path for s in dataset.train]
    objective = yield from _objective(method, weight, parent, cfg, train_paths, target, evaluation)
    done = None
    for event in train(cfg, dataset, stop, objective):
        if isinstance(event, ev.Finished):
            done = event
        else:
            yield event
    if done is None:  # stopped before the first epoch: nothing to keep
        if not resume:
            shutil.rmtree(out, ignore_errors=True)
        return
    step = {"name": "adapt", "method": method, "weight": weight, "target": str(target.root),
            "n_target": len(target.paths), "skipped": len(target.skipped)}  # fmt: skip
    mark_derived(out, parent.run_dir.name, step)
    yield ev.Notice("measuring the source-only and the adapted model on the new pictures")
    record = {"method": method, "parent": parent.run_dir.name, "step": step,
              **_measure(parent, out, train_paths, target, evaluation)}  # fmt: skip
    save_json(out / ADAPTATION, record)
    metrics = read_optional(out, METRICS) or {}
    yield ev.Finished(str(out), metrics, done.best_epoch, time.perf_counter() - begin)


def resume_adaptation(out: str | Path, stop=None) -> Iterator[ev.Event]:
    """Continue the stopped (or killed) adaptation in ``out`` with the run, new pictures,
    method, weight and labelled pictures it was started with (the events of
    :func:`adapt_run`). Raises :class:`StudioError` when there is nothing to continue."""
    out = Path(out)
    saved = read_optional(out, SETTINGS)
    if not isinstance(saved, dict) or not (out / CHECKPOINT).is_file():
        raise StudioError(f"nothing to resume: {out.name} is not a stopped adaptation")
    return adapt_run(saved["run"], saved["target"], out, saved["method"],
                     eval_dir=saved.get("eval"), weight=saved["weight"], resume=True,
                     stop=stop)  # fmt: skip
