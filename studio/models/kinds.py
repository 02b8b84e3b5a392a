"""A run's model on disk: saved, recorded (what kind of model it is and where it came from), and
loaded by kind.

Training leaves a timm backbone with a new head; compression and distillation leave models of
other shapes, backbones or runtimes. So every run folder holds, beside ``model.safetensors``
(weights only: nothing executable), a ``model.json`` record::

    {"kind": "timm", "backbone": "tf_efficientnet_lite0", "num_classes": 3,
     "parent": null, "step": null}

``parent`` names the run a derived model was made from and ``step`` what was done to it (for
example ``{"name": "prune", "ratio": 0.5}``). Loading looks the kind up in :data:`KINDS`; a new
capability registers its kind with :func:`register_kind` and says which methods cannot apply
to it (gradients through an int8 ONNX Runtime session, say), so Evaluate, Explain, Predict and
Export either work on it or say plainly why not. Runs made before ``model.json`` existed are
``timm`` models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..data.loaders import build_transform
from ..data.tasks import Tasks
from ..errors import RunError, StudioError, first_line
from ..runs import (
    CONFIG,
    LABELS,
    MODEL_RECORD,
    PREPROCESS,
    WEIGHTS,
    load_json,
    read_optional,
    require_run,
    save_json,
)

__all__ = [
    "KINDS",
    "ModelKind",
    "LoadedRun",
    "register_kind",
    "save_model",
    "mark_derived",
    "model_record",
    "load_run",
    "WEIGHTS_FORMAT",
]

WEIGHTS_FORMAT = "transfer-studio/1"


@dataclass(frozen=True)
class ModelKind:
    """How to rebuild one kind of model from its run folder, and what can be done with it.

    Attributes:
        name: The ``kind`` written in ``model.json``.
        build: ``(run folder, model record) -> model`` with its weights loaded, on the CPU.
        gradients: Whether gradients flow through it (Explain's maps and sanity checks).
        exports: The export formats it can be written to (:data:`studio.deployment.export.FORMATS`).
        why_not: One plain sentence for a method that cannot apply, shown by the UI and CLI.
        write: ``(loaded run, format, target file)`` for a kind whose model is already a graph
            (an int8 ONNX file is copied, not traced); None: traced from the PyTorch model.
        python_sample: Whether the download's "Python + timm" sample rebuilds this model
            (``timm.create_model`` + ``model.safetensors``); otherwise the zip leaves
            ``model.safetensors`` out, and the other formats are the model.
    """

    name: str
    build: Callable[[Path, dict], torch.nn.Module]
    gradients: bool = True
    exports: tuple[str, ...] = ("onnx", "pt2", "torchscript")
    why_not: str = ""
    write: Callable[[LoadedRun, str, Path], None] | None = None
    python_sample: bool = True

    def require(self, what: str, allowed: bool, parent: str | None = None) -> None:
        """Raise a plain :class:`StudioError` when ``what`` cannot be done with this kind
        (naming the run it was made from, when there is one: that run may do it)."""
        if not allowed:
            reason = f": {self.why_not}" if self.why_not else ""
            source = f" (it was made from run '{parent}')" if parent else ""
            raise StudioError(f"{what} does not work on {self.a_model}{reason}{source}")

    @property
    def a_model(self) -> str:
        """'a timm model', 'an onnx-int8 model': the kind in a sentence."""
        return f"{'an' if self.name[:1].lower() in 'aeiou' else 'a'} {self.name} model"


KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> ModelKind:
    """Make ``kind`` loadable (a module defining a new kind calls this once, at import)."""
    KINDS[kind.name] = kind
    return kind


def _build_timm(run: Path, record: dict) -> torch.nn.Module:
    import timm

    model = timm.create_model(
        record["backbone"], pretrained=False, num_classes=int(record["num_classes"])
    )
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    return model


register_kind(ModelKind("timm", _build_timm))


def save_model(
    run_dir: str | Path,
    model: torch.nn.Module,
    *,
    backbone: str,
    num_classes: int,
    kind: str = "timm",
    parent: str | None = None,
    step: dict | None = None,
    extra: dict | None = None,
) -> None:
    """Write ``model.safetensors`` and its ``model.json`` record.

    ``extra`` holds what the kind's builder needs beyond the backbone (a pruned model's channel
    counts, say); ``parent`` and ``step`` say where a derived model came from.
    """
    if kind not in KINDS:
        raise StudioError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    run = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(
        state,
        str(run / WEIGHTS),
        metadata={
            "backbone": backbone,
            "num_classes": str(num_classes),
            "kind": kind,
            "format": WEIGHTS_FORMAT,
        },
    )
    record = {"kind": kind, "backbone": backbone, "num_classes": num_classes}
    save_json(run / MODEL_RECORD, {**record, "parent": parent, "step": step, **(extra or {})})


def mark_derived(run_dir: str | Path, parent: str, step: dict) -> None:
    """Record in a saved model's ``model.json`` that it was made from run ``parent`` by
    ``step`` (a student trained by the usual recipe, then told who taught it)."""
    run = Path(run_dir)
    save_json(run / MODEL_RECORD, {**model_record(run), "parent": parent, "step": step})


def model_record(run_dir: str | Path) -> dict:
    """The run's ``model.json``; for a run made before it existed, the timm record it implies."""
    run = Path(run_dir)
    record = read_optional(run, MODEL_RECORD)
    if record is None:
        config = read_optional(run, CONFIG, {})
        labels = read_optional(run, LABELS, {})
        record = {
            "kind": "timm",
            "backbone": config.get("backbone") if isinstance(config, dict) else None,
            "num_classes": len(labels.get("labels", [])) if isinstance(labels, dict) else 0,
            "parent": None,
            "step": None,
        }
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        raise RunError(f"{run.name} is damaged: {MODEL_RECORD} names no kind of model")
    return record


@dataclass
class LoadedRun:
    """A finished run, ready to predict: the model (eval mode, CPU) and how to feed it."""

    run_dir: Path
    model: torch.nn.Module
    labels: list[str]
    multilabel: bool
    threshold: float
    preprocess: dict
    config: dict
    record: dict = field(default_factory=dict)
    tasks: Tasks | None = None  # a multi-task run's tasks (labels.json), else None

    @property
    def kind(self) -> ModelKind:
        return KINDS[self.record.get("kind", "timm")]

    def data_config(self) -> dict:
        """``preprocess.json`` in the shape timm's transforms take (tuples, not lists)."""
        p = self.preprocess
        return {
            "input_size": tuple(p["input_size"]),
            "interpolation": p["interpolation"],
            "mean": tuple(p["mean"]),
            "std": tuple(p["std"]),
            "crop_pct": p["crop_pct"],
        }

    def transform(self):
        return build_transform(self.data_config(), "none")

    def dataset(self):
        """The run's pictures, split exactly as when it was trained (its settings say how)."""
        from ..data.dataset import load_dataset

        c = self.config
        return load_dataset(c["data"], val_fraction=c.get("val_fraction", 0.15),
                            test_fraction=c.get("test_fraction", 0.15), seed=c.get("seed", 0),
                            tasks=self.tasks.names if self.tasks else None)  # fmt: skip


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild a run's model by its kind (safetensors: no code is unpickled)."""
    run = require_run(run_dir)
    config, labels, multilabel, threshold, preprocess = _checked_run_files(run)
    record = model_record(run)
    kind = KINDS.get(record["kind"])
    if kind is None:
        raise RunError(
            f"{run.name} holds a {record['kind']!r} model, which this version cannot load "
            f"(it knows {', '.join(KINDS)}); update Transfer Studio"
        )
    if record.get("num_classes") not in (None, len(labels)):
        raise RunError(f"{run.name} is damaged: {MODEL_RECORD} and {LABELS} disagree on classes")
    try:
        model = kind.build(run, {**record, "num_classes": len(labels)})
    except Exception as exc:  # noqa: BLE001 - any mismatch means the files do not belong together
        raise RunError(f"cannot load the model in {run}: {first_line(exc, 300)}") from None
    model.eval()
    tasks = _run_tasks(run, labels)
    return LoadedRun(run, model, labels, multilabel, threshold, preprocess, config, record, tasks)


def _run_tasks(run: Path, labels: list[str]) -> Tasks | None:
    """A multi-task run's tasks from ``labels.json`` (checked against its classes), else None."""
    saved = load_json(run / LABELS).get("tasks")
    if saved is None:
        return None
    try:
        return Tasks.from_json(saved, labels)
    except ValueError as exc:
        raise RunError(f"{run.name} is damaged: {LABELS}: {exc}") from None


_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _checked_run_files(run: Path) -> tuple[dict, list[str], bool, float, dict]:
    """The run's settings, every value checked before anything is built from it: a run folder
    may have been edited or damaged, and a label list of a million names would otherwise be
    built into a classifier of gigabytes before any check."""
    config, info, pre = (load_json(run / n) for n in (CONFIG, LABELS, PREPROCESS))

    def bad(what: str):
        return RunError(f"{run.name} is damaged: {what}; train it again or restore the files")

    if not all(isinstance(x, dict) for x in (config, info, pre)):
        raise bad("a settings file does not hold settings")
    labels = info.get("labels")
    if not isinstance(config.get("backbone"), str):
        raise bad(f"{CONFIG} names no backbone")
    if not (isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)):
        raise bad(f"{LABELS} holds no list of class names")
    try:  # the header only: no tensor is read
        with safe_open(str(run / WEIGHTS), "pt") as weights:
            classes = (weights.metadata() or {}).get("num_classes")
    except Exception:  # noqa: BLE001 - any failure means it is no safetensors file
        raise bad(f"{WEIGHTS} is not a weights file") from None
    if not 2 <= len(labels) <= 100_000 or (classes is not None and str(len(labels)) != classes):
        raise bad(f"{LABELS} lists {len(labels)} classes, the model has {classes or '?'}")
    threshold = info.get("threshold", 0.5)
    if not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise bad(f"the threshold {threshold!r} is not a number between 0 and 1")
    size, crop_pct = pre.get("input_size"), pre.get("crop_pct")
    checks = [
        (isinstance(size, list) and len(size) == 3 and size[0] == 3, "input size"),
        (all(isinstance(n, int) and 8 <= n <= 4096 for n in (size or [0])[1:]), "input size"),
        (isinstance(crop_pct, int | float) and 0.1 <= crop_pct <= 1.0, "crop share"),
        (pre.get("interpolation") in _INTERPOLATIONS, "interpolation"),
        (
            _three_numbers(pre.get("mean")) and _three_numbers(pre.get("std"), positive=True),
            "mean/std",
        ),
    ]
    for ok, what in checks:
        if not ok:
            raise bad(f"{PREPROCESS} has an impossible {what}")
    return config, labels, bool(info.get("multilabel")), float(threshold), pre


def _three_numbers(values, positive: bool = False) -> bool:
    return (
        isinstance(values, list)
        and len(values) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        and (not positive or all(v > 0 for v in values))
    )


# The kinds that ship with the studio and are not plain timm models register themselves here
# (after everything above exists: they import ModelKind and register_kind from this module).
from . import bfloat16, onnx_graph, pruned  # noqa: E402,F401
