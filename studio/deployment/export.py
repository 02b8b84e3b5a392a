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
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import ImageProblem
from ..data.loaders import prepared
from ..errors import StudioError
from ..inspection.model_card import write_model_card
from ..models.kinds import LoadedRun, load_run
from ..runs import (
    EXPORTS,
    RUN_INFO,
    SPLIT,
    WEIGHTS,
    load_json,
    save_json,
)

__all__ = [
    "LoadedRun",
    "load_run",
    "export_run",
    "export_formats",
    "checked_exports",
    "refresh_model_card",
    "check_images",
    "file_sha256",
    "ExportResult",
    "FORMATS",
    "FILE_NAMES",
]

FORMATS = ("onnx", "pt2", "torchscript")
FILE_NAMES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}


# --------------------------------------------------------------------------- exports


@dataclass
class ExportResult:
    format: str
    path: str
    images: int
    agreement: float  # share of images (and tasks) where the top-1 class is PyTorch's
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
    split_file = run / SPLIT
    if not split_file.is_file():
        return []
    root = Path(load_json(run / RUN_INFO).get("data_root", ""))
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
            tensors.append(prepared(p, tf))
    if not tensors:
        # No images left on disk: fall back to fixed noise so the check still compares numbers.
        generator = torch.Generator().manual_seed(0)
        return torch.randn((4, *loaded.preprocess["input_size"]), generator=generator)
    return torch.stack(tensors)


# The exported graphs take any number of pictures at once (named "batch" in ONNX).
_BATCH = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}


class _Reference:
    """What every format of one run is made from and checked against, computed once however
    many formats are exported: the check pictures, the model's own logits for them, and the
    ``torch.export`` program that both ONNX and pt2 are made from (tracing is the slow part of
    each: about 2.5 s for EfficientNet-Lite0 on a 2-core CPU).

    The graphs are traced on zeros of the input size, never on the person's pictures: a
    ``torch.export`` program keeps its example inputs in the file it is saved to (``pt2``'s
    ``sample_inputs``), and the zip must not carry a run's pictures to whoever receives it."""

    def __init__(self, loaded: LoadedRun):
        self.loaded = loaded
        self.images = _batch(loaded, _check_images(loaded.run_dir))
        with torch.no_grad():  # channels-last: the convolutions run that way, about 2x here
            x = self.images.contiguous(memory_format=torch.channels_last)
            self.expected = loaded.model(x).numpy()
        self.example = torch.zeros((2, *self.images.shape[1:]))  # 2: the batch stays free
        self.model = _graph_model(loaded)
        self._program = None

    def program(self) -> torch.export.ExportedProgram:
        if self._program is None:
            self._program = torch.export.export(self.model, (self.example,), dynamic_shapes=_BATCH)
        return self._program


class TaskOutputs(torch.nn.Module):
    """A multi-task model as the exported graphs give it: one output per task (named after the
    task in ONNX), in the order of ``labels.json``'s tasks, instead of one row of logits."""

    def __init__(self, model: torch.nn.Module, sizes: list[int]):
        super().__init__()
        self.model, self.sizes = model, sizes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x).split(self.sizes, dim=1))


def _graph_model(loaded: LoadedRun) -> torch.nn.Module:
    if loaded.tasks is None:
        return loaded.model
    return TaskOutputs(loaded.model, [len(t.labels) for t in loaded.tasks]).eval()


def _write_graph(ref: _Reference, fmt: str, target: Path) -> None:
    """Write one format to ``target`` (a private temporary name: see :func:`export_run`)."""
    loaded = ref.loaded
    outputs = loaded.tasks.names if loaded.tasks is not None else ["logits"]
    if fmt == "onnx":
        # One self-contained file: ONNX keeps weights beside the graph ("model.onnx.data") unless
        # told not to, and a user who copies only model.onnx would have a model that does not run.
        # Protobuf caps one file at 2 GB; only models that large keep an external data file.
        weights = sum(t.numel() * t.element_size() for t in loaded.model.state_dict().values())
        torch.onnx.export(
            ref.program(),
            (ref.example,),
            str(target),
            dynamo=True,
            input_names=["image"],
            output_names=outputs,
            dynamic_shapes=_BATCH,  # with the program: names its free dimension "batch"
            external_data=weights > 1_800_000_000,
        )
    elif fmt == "pt2":
        torch.export.save(ref.program(), str(target))
    else:
        torch.jit.trace(ref.model, ref.example).save(str(target))


def _run_graph(fmt: str, path: Path, images: torch.Tensor) -> np.ndarray:
    """Load the written file the way its users will, and run it; several outputs (one per
    task) come back side by side, as one row of logits per picture."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    else:
        with torch.no_grad():
            module = torch.export.load(str(path)).module() if fmt == "pt2" else torch.jit.load(path)
            out = module(images)
        got = [t.numpy() for t in out] if isinstance(out, tuple | list) else [out.numpy()]
    return np.concatenate([np.asarray(g) for g in got], axis=1)


def _agreement(loaded: LoadedRun, got: np.ndarray, expected: np.ndarray) -> float:
    """Share of pictures with the same top-1 class (per task, for a multi-task model)."""
    if loaded.tasks is not None:
        return loaded.tasks.agreement(got, expected, loaded.threshold)
    return float((got.argmax(1) == expected.argmax(1)).mean())


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
    loaded = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    _exportable(loaded, fmt)
    return _export(_Reference(loaded), fmt, out)


def export_formats(
    run_dir: str | Path | LoadedRun,
    formats: list[str],
    starting: Callable[[int, str], None] | None = None,
) -> list[ExportResult]:
    """:func:`export_run` for several formats into the run folder, the check pictures, the
    model's own answers and the traced program shared between them (one trace for ONNX and
    pt2 instead of one each). ``starting(i, fmt)`` is called before each format."""
    loaded = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    for fmt in formats:
        _exportable(loaded, fmt)
    if not formats:
        return []
    ref = _Reference(loaded)
    results = []
    for i, fmt in enumerate(formats):
        if starting is not None:
            starting(i, fmt)
        results.append(_export(ref, fmt))
    return results


def _exportable(loaded: LoadedRun, fmt: str) -> None:
    """Refuse a format that does not exist or that this kind of model cannot be, before any
    picture is run through the model."""
    if fmt not in FORMATS:
        raise StudioError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    loaded.kind.require(f"exporting to {fmt}", fmt in loaded.kind.exports)


def _export(ref: _Reference, fmt: str, out: str | Path | None = None) -> ExportResult:
    """One format written, loaded back as its users load it, and compared with ``ref``."""
    loaded = ref.loaded
    run = loaded.run_dir
    target = Path(out) if out else run / FILE_NAMES[fmt]
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        staged = scratch / target.name
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if loaded.kind.write is not None:  # already a graph (an int8 ONNX file)
                loaded.kind.write(loaded, fmt, staged)
            else:
                _write_graph(ref, fmt, staged)
            got = _run_graph(fmt, staged, ref.images)
        for part in sorted(scratch.iterdir(), key=lambda p: p == staged):  # the graph last
            os.replace(part, target.parent / part.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = ExportResult(
        fmt,
        str(target),
        len(ref.images),
        _agreement(loaded, got, ref.expected),
        float(np.abs(got - ref.expected).max()),
        time.perf_counter() - start,
        file_sha256(target),
        file_sha256(run / WEIGHTS),
    )
    if target.parent.resolve() == run.resolve():
        record = {**asdict(result), "path": target.name}  # no absolute paths in the run's files
        records = [r for r in _export_records(run) if r.get("format") != fmt] + [record]
        save_json(run / EXPORTS, records)
        refresh_model_card(run)
    return result


def _export_records(run: Path) -> list[dict]:
    records = load_json(run / EXPORTS) if (run / EXPORTS).exists() else []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def checked_exports(run_dir: str | Path) -> dict[str, dict]:
    """The exports whose check still holds: the file is there, byte for byte as it was checked,
    and made from the model the run holds now. A format missing here must be exported again."""
    run = Path(run_dir)
    source = run / WEIGHTS
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


def refresh_model_card(run_dir: str | Path) -> Path:
    """The run's model card again, listing the exports whose check still holds."""
    return write_model_card(run_dir, list(checked_exports(run_dir).values()))
