"""The model a person takes away: weights, labels, preprocessing, a model card, exported graphs.

Every run folder gets ``model.safetensors`` (weights only: nothing executable), ``labels.json``,
``preprocess.json`` and ``MODEL_CARD.md``. :func:`export_run` adds a graph that runs without this
project and checks its own work: the exported file is run on the run's validation images and its
predictions are compared with PyTorch's; agreement and the largest difference go into
``exports.json`` and the card. The formats:

* ``onnx`` -- ONNX Runtime on phones, in browsers, from C#, Java, C++ (made through
  ``torch.export``, the dynamo exporter);
* ``pt2`` -- a ``torch.export`` program (``torch.export.load``), PyTorch's own format for
  deployment and AOTInductor;
* ``torchscript`` -- for existing LibTorch C++ apps; PyTorch has deprecated TorchScript in favour
  of ``torch.export``, so prefer ``pt2`` for anything new.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .data import readable
from .errors import RunError, StudioError, first_line
from .evaluate import score_words
from .images import ImageProblem, open_rgb
from .loaders import build_transform
from .runs import load_json, require_run, save_json

__all__ = [
    "LoadedRun",
    "load_run",
    "write_model_files",
    "export_run",
    "checked_exports",
    "check_images",
    "file_sha256",
    "ExportResult",
    "FORMATS",
    "FILE_NAMES",
]

FORMATS = ("onnx", "pt2", "torchscript")
FILE_NAMES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}
EXPORTS = "exports.json"


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


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild the trained model from its run folder (safetensors: no code is unpickled)."""
    run = require_run(run_dir)
    config, labels, multilabel, threshold, preprocess = _checked_run_files(run)
    try:
        model = timm.create_model(config["backbone"], pretrained=False, num_classes=len(labels))
        state = load_file(str(run / "model.safetensors"))
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any mismatch means the files do not belong together
        raise RunError(f"cannot load the model in {run}: {first_line(exc, 300)}") from None
    model.eval()
    return LoadedRun(run, model, labels, multilabel, threshold, preprocess, config)


_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _checked_run_files(run: Path) -> tuple[dict, list[str], bool, float, dict]:
    """The run's settings, every value checked before anything is built from it: a run folder
    may have been edited or damaged, and a label list of a million names would otherwise be
    built into a classifier of gigabytes before any check."""
    config, info, pre = (
        load_json(run / n) for n in ("config.json", "labels.json", "preprocess.json")
    )

    def bad(what: str):
        return RunError(f"{run.name} is damaged: {what}; train it again or restore the files")

    if not all(isinstance(x, dict) for x in (config, info, pre)):
        raise bad("a settings file does not hold settings")
    labels = info.get("labels")
    if not isinstance(config.get("backbone"), str):
        raise bad("config.json names no backbone")
    if not (isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)):
        raise bad("labels.json holds no list of class names")
    try:  # the header only: no tensor is read
        with safe_open(str(run / "model.safetensors"), "pt") as weights:
            classes = (weights.metadata() or {}).get("num_classes")
    except Exception:  # noqa: BLE001 - any failure means it is no safetensors file
        raise bad("model.safetensors is not a weights file") from None
    if not 2 <= len(labels) <= 100_000 or (classes is not None and str(len(labels)) != classes):
        raise bad(f"labels.json lists {len(labels)} classes, the model has {classes or '?'}")
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
            raise bad(f"preprocess.json has an impossible {what}")
    return config, labels, bool(info.get("multilabel")), float(threshold), pre


def _three_numbers(values, positive: bool = False) -> bool:
    return (
        isinstance(values, list)
        and len(values) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        and (not positive or all(v > 0 for v in values))
    )


def write_model_files(
    run_dir: Path,
    model: torch.nn.Module,
    cfg,
    dataset,
    metrics: dict,
    weights_note: str,
    history: list[dict],
    best_epoch: int,
) -> None:
    """Write weights, metrics and the model card at the end of training."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(
        state,
        str(run_dir / "model.safetensors"),
        metadata={
            "backbone": cfg.backbone,
            "num_classes": str(len(dataset.classes)),
            "format": "transfer-studio/1",
        },
    )
    save_json(run_dir / "metrics.json", metrics)
    save_json(
        run_dir / "run_info.json",
        {
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "weights": weights_note,
            "split_hash": dataset.split_hash(),
            "data_root": str(dataset.root),
            "classes": dataset.classes,
            "sizes": {k: len(v) for k, v in dataset.splits.items()},
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    write_model_card(run_dir)


# --------------------------------------------------------------------------- exports


@dataclass
class ExportResult:
    format: str
    path: str
    images: int
    agreement: float  # share of images where the top-1 class is the same as PyTorch's
    max_abs_diff: float  # largest difference in any logit
    seconds: float
    sha256: str = ""  # of the exported file as checked: a later change makes the check void
    source_sha256: str = ""  # of model.safetensors it was made from


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256, read in blocks (exported graphs can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_images(run: Path, limit: int = 32) -> list[str]:
    """Validation images of the run (then test, then train) that still exist, for the self-check."""
    split_file = run / "split.csv"
    if not split_file.is_file():
        return []
    root = Path(load_json(run / "run_info.json").get("data_root", ""))
    with open(split_file, newline="", errors="surrogateescape") as fh:
        rows = list(csv.DictReader(fh))
    found = []
    for split in ("val", "test", "train"):
        for row in rows:
            if row["split"] != split:
                continue
            path = root / row["path"]
            if path.is_file():
                found.append(str(path))
            if len(found) >= limit:
                return found
    return found


def check_images(run_dir: str | Path, limit: int = 32) -> list[str]:
    """Up to ``limit`` of the run's own pictures that still exist (validation first)."""
    return _check_images(Path(run_dir), limit)


def _batch(loaded: LoadedRun, paths: list[str]) -> torch.Tensor:
    tf = loaded.transform()
    tensors = []
    for p in paths:
        with contextlib.suppress(ImageProblem):
            tensors.append(tf(open_rgb(p)))
    if not tensors:
        # No images left on disk: fall back to fixed noise so the check still compares numbers.
        generator = torch.Generator().manual_seed(0)
        return torch.randn((4, *loaded.preprocess["input_size"]), generator=generator)
    return torch.stack(tensors)


def _write_graph(loaded: LoadedRun, fmt: str, target: Path, example: torch.Tensor) -> None:
    """Write one format to ``target`` (a private temporary name: see :func:`export_run`)."""
    batch = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
    if fmt == "onnx":
        # One self-contained file: ONNX keeps weights beside the graph ("model.onnx.data") unless
        # told not to, and a user who copies only model.onnx would have a model that does not run.
        # Protobuf caps one file at 2 GB; only models that large keep an external data file.
        weights = sum(t.numel() * t.element_size() for t in loaded.model.state_dict().values())
        torch.onnx.export(
            loaded.model,
            (example,),
            str(target),
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=batch,
            external_data=weights > 1_800_000_000,
        )
    elif fmt == "pt2":
        program = torch.export.export(loaded.model, (example,), dynamic_shapes=batch)
        torch.export.save(program, str(target))
    else:
        torch.jit.trace(loaded.model, example).save(str(target))


def _run_graph(fmt: str, path: Path, images: torch.Tensor) -> np.ndarray:
    """Load the written file the way its users will, and run it."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    with torch.no_grad():
        module = torch.export.load(str(path)).module() if fmt == "pt2" else torch.jit.load(path)
        return module(images).numpy()


def export_run(
    run_dir: str | Path | LoadedRun, fmt: str, out: str | Path | None = None
) -> ExportResult:
    """Export the run's model and verify the exported file against PyTorch.

    The file is written and checked under a temporary name, then renamed into place: a crash or
    a ``kill -9`` leaves either the previous checked file or none, never half of one. The
    check's record in ``exports.json`` carries the file's SHA-256, so a file changed afterwards
    is never called checked (see :func:`checked_exports`).

    Args:
        run_dir: A finished run (or one already loaded, to export several formats from it).
        fmt: One of :data:`FORMATS`: ``"onnx"``, ``"pt2"`` or ``"torchscript"``.
        out: Output file; defaults to ``model.onnx`` / ``model.pt2`` / ``model.torchscript.pt``
            in the run.

    Returns:
        An :class:`ExportResult` (also recorded in ``exports.json`` and the model card when the
        file is written into the run folder).
    """
    if fmt not in FORMATS:
        raise StudioError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    loaded = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    run = loaded.run_dir
    target = Path(out) if out else run / FILE_NAMES[fmt]
    target.parent.mkdir(parents=True, exist_ok=True)
    images = _batch(loaded, _check_images(run))
    start = time.perf_counter()
    with torch.no_grad():
        expected = loaded.model(images).numpy()
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        staged = scratch / target.name
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            _write_graph(loaded, fmt, staged, images[:2])
            got = _run_graph(fmt, staged, images)
        for part in sorted(scratch.iterdir(), key=lambda p: p == staged):  # the graph last
            os.replace(part, target.parent / part.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = ExportResult(
        fmt,
        str(target),
        len(images),
        float((got.argmax(1) == expected.argmax(1)).mean()),
        float(np.abs(got - expected).max()),
        time.perf_counter() - start,
        file_sha256(target),
        file_sha256(run / "model.safetensors"),
    )
    if target.parent.resolve() == run.resolve():
        record = {**asdict(result), "path": target.name}  # no absolute paths in the run's files
        records = [r for r in _export_records(run) if r.get("format") != fmt] + [record]
        save_json(run / EXPORTS, records)
        write_model_card(run)
    return result


def _export_records(run: Path) -> list[dict]:
    records = load_json(run / EXPORTS) if (run / EXPORTS).exists() else []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def checked_exports(run_dir: str | Path) -> dict[str, dict]:
    """The exports whose check still holds: the file is there, byte for byte as it was checked,
    and made from the model the run holds now. A format missing here must be exported again."""
    run = Path(run_dir)
    source = run / "model.safetensors"
    source_hash = file_sha256(source) if source.is_file() else None
    valid = {}
    for record in _export_records(run):
        path = run / Path(str(record.get("path", ""))).name
        if (
            record.get("format") in FORMATS
            and path.is_file()
            and record.get("sha256") == file_sha256(path)
            and record.get("source_sha256") == source_hash
        ):
            valid[record["format"]] = record
    return valid


# --------------------------------------------------------------------------- the model card


def write_model_card(run_dir: str | Path) -> Path:
    """MODEL_CARD.md from what the run folder holds: data, backbone, freeze, metrics, limits."""
    run = Path(run_dir)
    cfg = load_json(run / "config.json")
    info = load_json(run / "run_info.json")
    metrics = load_json(run / "metrics.json")
    pre = load_json(run / "preprocess.json")
    report = load_json(run / "data_report.json") if (run / "data_report.json").exists() else {}
    exports = list(checked_exports(run).values())
    labels = metrics["labels"]
    lines = [
        f"# Model card: {run.name}",
        "",
        f"An image classifier for **{len(labels)} classes** ({', '.join(labels)}), fine-tuned with "
        "Transfer Studio.",
        "",
        "## Model",
        f"- Backbone: `{cfg['backbone']}` (timm), starting from {info['weights']}.",
        f"- Frozen: `{cfg['freeze']}`"
        + (f" after {cfg['head_epochs']} head-only epochs" if cfg.get("head_epochs") else "")
        + f"; trained {info['epochs_run']} epochs, kept epoch {info['best_epoch']} "
        "(lowest validation loss).",
        f"- Optimiser {cfg['optimizer']}, learning rate {cfg['lr']}, {cfg['schedule']} schedule, "
        f"layer-wise decay {cfg['layer_decay']}, weight decay {cfg['weight_decay']}, "
        f"label smoothing {cfg['label_smoothing']}, augmentation `{cfg['augment']}`.",
        f"- Input: RGB {pre['crop']}x{pre['crop']}; {pre['how']} "
        f"(mean {pre['mean']}, std {pre['std']}).",
        "",
        "## Data",
        f"- Source: `{readable(Path(str(report.get('source', cfg.get('data')))).name)}`; "
        "images per split: "
        f"{info['sizes']}.",
        f"- Split fingerprint `{info['split_hash']}` (seed {cfg['seed']}); `split.csv` lists "
        "which file went where.",
    ]
    if report.get("skipped"):
        lines.append(f"- {len(report['skipped'])} file(s) were skipped; see `data_report.json`.")
    for warning in report.get("warnings", []):
        lines.append(f"- Warning: {warning}")
    lines += [
        "",
        f"## Results (on the {metrics.get('split', 'held-out')} split, {metrics.get('n', '?')} images)",
        f"- Accuracy: **{metrics['accuracy']:.3f}**; macro F1: **{metrics['macro_f1']:.3f}**"
        + (f"; mAP: {metrics['mAP']:.3f}" if metrics.get("mAP") is not None else ""),
        "",
        *(
            [f"- **Not a test score**: {score_words(metrics)}.", ""]
            if metrics.get("split") == "train"
            else []
        ),
        "| class | precision | recall | F1 | images |",
        "|---|---|---|---|---|",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
            f"{row['support']} |"
        )
    if metrics.get("most_confused"):
        pairs = ", ".join(
            f"{p['true']} taken for {p['predicted']} ({p['count']}x)"
            for p in metrics["most_confused"][:5]
        )
        lines += ["", f"Most common mistakes: {pairs}."]
    if exports:
        lines += [
            "",
            "## Exported files (checked against PyTorch on the run's own images)",
            "",
            "| format | file | images checked | top-1 agreement | max abs logit diff |",
            "|---|---|---|---|---|",
        ]
        for e in exports:
            lines.append(
                f"| {e['format']} | `{Path(e['path']).name}` | {e['images']} | "
                f"{e['agreement']:.3f} | {e['max_abs_diff']:.2e} |"
            )
    lines += [
        "",
        "## Limits",
        f"- Only knows these classes: {', '.join(labels)}. Any other picture is still forced "
        "into one of them, often with high confidence.",
        f"- Trained on {sum(info['sizes'].values())} images; the numbers above come from "
        f"{metrics.get('n', '?')} held-out images and are rough with so few.",
        "- Inherits the biases of its ImageNet pretraining and of the pictures it was given.",
        "",
        "## Use",
        "```python",
        "from studio.predict import Predictor",
        f"print(Predictor('{run.name}').predict(['photo.jpg']))",
        "```",
        f"Files: `model.safetensors`, `labels.json`, `preprocess.json`. "
        f"Made with torch {info['torch']}, timm {info['timm']}, on {info['finished']}.",
    ]
    path = run / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
