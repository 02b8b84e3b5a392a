"""How good is the model, and where does it go wrong: metrics from scikit-learn, plus the mistakes.

``metrics.json`` (written by :func:`evaluate_run` and at the end of training) holds ``accuracy``,
``macro_f1``, ``labels``, ``confusion_matrix`` (rows = true class, columns = predicted),
``per_class`` (precision, recall, f1, support), ``top_losses`` (the hardest images: every
mistake first, highest loss first, then the right answers it was least sure about) and ``most_confused`` (the
class pairs mixed up most often).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)

from ..data.dataset import Sample
from ..data.loaders import ImageSamples, image_loader
from ..data.tasks import Tasks, flat_name

__all__ = [
    "probabilities",
    "predict_probs",
    "compute_metrics",
    "evaluate_samples",
    "evaluate_run",
    "TOP_LOSSES",
]

TOP_LOSSES = 16


def probabilities(
    logits: torch.Tensor, multilabel: bool, tasks: Tasks | None = None
) -> torch.Tensor:
    """Class probabilities as runs report them: a sigmoid per tag, else a softmax (with
    ``tasks``: each task's own, side by side)."""
    if tasks is not None:
        return tasks.probabilities(logits)
    return logits.sigmoid() if multilabel else logits.softmax(-1)


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    dataset: ImageSamples,
    device: torch.device,
    batch_size: int = 32,
    channels_last: bool = True,
    tasks: Tasks | None = None,
) -> np.ndarray:
    """Class probabilities (softmax, or sigmoid for multi-label) for every image, in order."""
    model.eval()
    out = []
    for images, _ in image_loader(dataset, batch_size, workers=-1):
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images).float()
        out.append(probabilities(logits, dataset.multilabel, tasks).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, dataset.num_classes))


def score_words(metrics: dict) -> str:
    """The headline result in plain words, honest about which pictures it was measured on:
    with too few pictures to keep any back, the score is on the training pictures and is no
    test score at all."""
    head = f"accuracy {metrics['accuracy']:.1%}"
    if metrics.get("tasks"):
        each = ", ".join(f"{name} {m['accuracy']:.1%}" for name, m in metrics["tasks"].items())
        head = f"mean accuracy over the tasks {metrics['accuracy']:.1%} ({each})"
    if metrics.get("split") == "train":
        return (
            f"{head} on the {metrics.get('n', '?')} pictures it learnt from (too few pictures to "
            "keep any back for testing, so this is not a test score: add more pictures)"
        )
    return f"{head} on {metrics.get('n', '?')} {metrics.get('split', 'held-out')} pictures"


def hardest_first(losses: np.ndarray, correct: np.ndarray, limit: int = TOP_LOSSES) -> np.ndarray:
    """Indices of the hardest pictures: every mistake before any right answer, each part by
    loss, highest first. Loss alone would put an unsure right answer (with many classes, or with
    label smoothing) before a mistake made with little confidence."""
    return np.lexsort((-np.asarray(losses), np.asarray(correct, dtype=bool)))[:limit]


def _per_class(classes, precision, recall, f1, support, ap=None) -> dict:
    rows = {}
    for k, name in enumerate(classes):
        rows[name] = {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        if ap is not None:
            rows[name]["ap"] = ap[k]
    return rows


def compute_metrics(
    samples: Sequence[Sample],
    probs: np.ndarray,
    classes: list[str],
    multilabel: bool = False,
    threshold: float = 0.5,
    tasks: Tasks | None = None,
) -> dict:
    """All metrics from true labels and predicted probabilities (with ``tasks``, each task's
    under ``"tasks"``: :func:`_multitask_metrics`).

    >>> s = [Sample("a.jpg", (0,)), Sample("b.jpg", (1,))]
    >>> compute_metrics(s, np.array([[0.9, 0.1], [0.8, 0.2]]), ["cat", "dog"])["accuracy"]
    0.5
    """
    if tasks is not None:
        return _multitask_metrics(samples, probs, tasks, threshold)
    if multilabel:
        return _multilabel_metrics(samples, probs, classes, threshold)
    return _single_label_metrics(samples, probs, classes)


def _multitask_metrics(samples, probs: np.ndarray, tasks: Tasks, threshold: float) -> dict:
    """Each task's usual metrics under ``tasks`` (its classes named as in the task); at the top,
    the mean accuracy and macro F1 over the tasks, every class's row under its flat name, and
    the hardest pictures and commonest mistakes of all tasks (each saying its task)."""
    per_task, per_class, hardest, confused = {}, {}, [], []
    local = [tasks.local_labels(s.labels) for s in samples]
    for i, t in enumerate(tasks):
        own = [Sample(s.path, loc[i], s.width, s.height) for s, loc in zip(samples, local)]
        m = compute_metrics(own, probs[:, t.columns], list(t.labels), t.multilabel, threshold)
        per_task[t.name] = m
        per_class.update({flat_name(t.name, k): row for k, row in m["per_class"].items()})
        hardest += [{**row, "task": t.name} for row in m["top_losses"]]
        confused += [{**p, "task": t.name} for p in m["most_confused"]]
    hardest.sort(key=lambda r: (r.get("correct", r["true"] == r["predicted"]), -r["loss"]))
    confused.sort(key=lambda p: -p["count"])
    return {
        "task": "multitask",
        "accuracy": float(np.mean([m["accuracy"] for m in per_task.values()])),
        "macro_f1": float(np.mean([m["macro_f1"] for m in per_task.values()])),
        "labels": tasks.flat_labels,
        "tasks": per_task,
        "per_class": per_class,
        "confusion_matrix": [],  # one per task, under "tasks"
        "top_losses": hardest[:TOP_LOSSES],
        "most_confused": confused[:10],
        "n": len(samples),
    }


_EPS = 1e-7  # keeps log() finite at a probability of 0 or 1


def _multilabel_metrics(samples, probs: np.ndarray, classes: list[str], threshold: float) -> dict:
    """Tags: exact-match accuracy, macro F1, mAP, one 2x2 matrix per tag, hardest pictures."""
    n, paths = len(classes), [s.path for s in samples]
    y_true = np.zeros((len(samples), n), dtype=int)
    for i, s in enumerate(samples):
        y_true[i, list(s.labels)] = 1
    y_pred = (probs >= threshold).astype(int)
    p, r, f, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, labels=list(range(n)), zero_division=0
    )
    ap = [
        float(average_precision_score(y_true[:, k], probs[:, k])) if y_true[:, k].any() else None
        for k in range(n)
    ]
    valid_ap = [a for a in ap if a is not None]
    losses = -(y_true * np.log(probs + _EPS) + (1 - y_true) * np.log(1 - probs + _EPS)).mean(1)
    order = hardest_first(losses, (y_pred == y_true).all(1))
    return {
        "task": "multilabel",
        "accuracy": float(accuracy_score(y_true, y_pred)),  # exact match of the whole tag set
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "mAP": float(np.mean(valid_ap)) if valid_ap else None,
        "threshold": threshold,
        "labels": classes,
        "confusion_matrix": multilabel_confusion_matrix(y_true, y_pred).tolist(),
        "per_class": _per_class(classes, p, r, f, support, ap=ap),
        "top_losses": [
            {
                "path": paths[i],
                "true": [classes[k] for k in np.nonzero(y_true[i])[0]],
                "predicted": [classes[k] for k in np.nonzero(y_pred[i])[0]],
                "loss": float(losses[i]),
            }
            for i in order
        ],
        "most_confused": [],
        "n": len(samples),
    }


def _single_label_metrics(samples, probs: np.ndarray, classes: list[str]) -> dict:
    """One class a picture: accuracy, macro F1, the confusion matrix, the most confused pairs,
    the hardest pictures and every picture's outcome."""
    n, paths = len(classes), [s.path for s in samples]
    y_true = np.array([s.labels[0] for s in samples], dtype=int)
    y_pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    p, r, f, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, labels=list(range(n)), zero_division=0
    )
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n)))
    losses = -np.log(probs[np.arange(len(y_true)), y_true] + _EPS) if len(probs) else np.zeros(0)
    pairs = [
        {"true": classes[i], "predicted": classes[j], "count": int(cm[i, j])}
        for i in range(n)
        for j in range(n)
        if i != j and cm[i, j] > 0
    ]
    pairs.sort(key=lambda d: -d["count"])

    def outcome(i: int) -> dict:
        return {
            "path": paths[i],
            "true": classes[y_true[i]],
            "predicted": classes[y_pred[i]],
            "confidence": float(probs[i, y_pred[i]]),
        }

    return {
        "task": "single-label",
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(
            f1_score(y_true, y_pred, average="macro", labels=list(range(n)), zero_division=0)
        ),
        "labels": classes,
        "confusion_matrix": cm.tolist(),
        "per_class": _per_class(classes, p, r, f, support),
        "top_losses": [
            {**outcome(i), "loss": float(losses[i]), "correct": bool(y_pred[i] == y_true[i])}
            for i in hardest_first(losses, y_pred == y_true)
        ],
        "most_confused": pairs[:10],
        # Every held-out picture's outcome, so a confusion-matrix cell can show its pictures.
        "predictions": [outcome(i) for i in range(len(y_true))],
        "n": len(samples),
    }


def evaluate_samples(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    transform,
    classes: list[str],
    multilabel: bool,
    device: torch.device,
    *,
    threshold: float = 0.5,
    batch_size: int = 32,
    channels_last: bool = True,
    split: str = "test",
    tasks: Tasks | None = None,
) -> dict:
    """Run ``model`` over ``samples`` and compute :func:`compute_metrics`."""
    dataset = ImageSamples(samples, transform, len(classes), multilabel)
    probs = predict_probs(model, dataset, device, batch_size, channels_last, tasks)
    metrics = compute_metrics(samples, probs, classes, multilabel, threshold, tasks)
    metrics["split"] = split
    return metrics


def evaluate_run(run_dir: str | Path, data: str | Path, batch_size: int = 32) -> tuple[dict, Path]:
    """Evaluate a finished run on ``data`` and write the metrics into the run folder.

    When ``data`` is the run's own dataset (same files, same split), the held-out split is used
    and ``metrics.json`` is rewritten; any other dataset is used whole, as a new test set, and
    its metrics go to ``eval-<name>.json``. Class names must be ones the model knows.

    Returns:
        ``(metrics, path written)``.
    """
    from ..data.dataset import load_dataset
    from ..errors import DataError
    from ..models.kinds import load_run
    from ..runs import METRICS, RUN_INFO, load_json, save_json

    loaded = load_run(run_dir)
    cfg = loaded.config
    dataset = load_dataset(
        data,
        val_fraction=cfg["val_fraction"],
        test_fraction=cfg["test_fraction"],
        seed=cfg["seed"],
        tasks=loaded.tasks.names if loaded.tasks else None,
    )
    unknown = [c for c in dataset.classes if c not in loaded.labels]
    if unknown:
        raise DataError(
            f"the model does not know the class(es) {', '.join(unknown)}; "
            f"it knows {', '.join(loaded.labels)}"
        )
    info = load_json(loaded.run_dir / RUN_INFO)
    if dataset.split_hash() == info.get("split_hash"):
        split, samples = dataset.held_out()
        target = loaded.run_dir / METRICS
    else:
        split = "all"
        samples = [s for part in dataset.splits.values() for s in part]
        target = loaded.run_dir / f"eval-{Path(data).stem}.json"
    remap = [loaded.labels.index(c) for c in dataset.classes]
    samples = [
        Sample(s.path, tuple(sorted(remap[i] for i in s.labels)), s.width, s.height)
        for s in samples
    ]
    metrics = evaluate_samples(
        loaded.model,
        samples,
        loaded.transform(),
        loaded.labels,
        loaded.multilabel,
        torch.device("cpu"),
        threshold=loaded.threshold,
        batch_size=batch_size,
        split=split,
        tasks=loaded.tasks,
    )
    save_json(target, metrics)
    return metrics, target
