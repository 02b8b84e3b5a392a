"""The download: one zip with the model in every format, checked as the person receives it.

A check made in the run folder proves little about the zip: a file can be left out (ONNX's
``model.onnx.data`` once was), or the code shown beside the download can disagree with how the
app prepares pictures. So after packing, :func:`build_package` unpacks the zip into an empty
folder and runs the very code samples the app and the README show (:data:`studio.deployment.samples.SAMPLES`), in a fresh
Python process, on the run's own pictures, and compares their logits and answers with the model
in the app. Only formats that pass are called checked.

The zip holds no absolute paths: JSON files keep file names only (a workspace's location on the
server is nobody else's business), and it is written under a temporary name and renamed, so a
crash never leaves half a zip under the final name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StudioError
from ..models.kinds import LoadedRun, load_run
from ..runs import CONFIG, EXPORTS, LABELS, METRICS, MODEL_CARD, MODEL_RECORD, PREPROCESS, WEIGHTS
from .export import FILE_NAMES, FORMATS, check_images, checked_exports, export_formats
from .samples import samples_for

__all__ = ["Package", "FormatCheck", "SampleRunner", "build_package", "check_zip"]

ZIPPED = [
    WEIGHTS,
    MODEL_RECORD,
    *FILE_NAMES.values(),
    "model.onnx.data",  # only for models over 2 GB; smaller ONNX files hold their weights
    LABELS,
    PREPROCESS,
    MODEL_CARD,
    METRICS,
    CONFIG,
    EXPORTS,
]

# Runs the samples in the unpacked folder; prints one JSON line: answers and logits per format.
# It imports the libraries the samples use first, then waits for its job: started before the
# exports (see SampleRunner), those imports (about 7 s on a 2-core laptop) overlap with them.
_RUNNER = """
import contextlib, importlib, io, json, os, shutil, sys
for name in ("numpy", "PIL.Image", "onnxruntime", "torch", "timm", "safetensors.torch"):
    with contextlib.suppress(Exception):
        importlib.import_module(name)
job = json.loads(sys.stdin.read())
os.chdir(job["folder"])
out = {}
for fmt, code in job["samples"].items():
    rows = []
    for picture in job["pictures"]:
        shutil.copyfile(picture, "photo.jpg")
        printed, scope = io.StringIO(), {}
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(code, fmt + "-sample", "exec"), scope)
            rows.append({"answer": printed.getvalue().strip(),
                         "logits": [float(v) for v in scope["logits"]]})
        except Exception as exc:
            rows.append({"error": f"{type(exc).__name__}: {exc}"})
    out[fmt] = rows
print(json.dumps(out))
"""


class SampleRunner:
    """A fresh Python that will run the shown code samples on an unpacked zip: started early
    (its imports take seconds), given its one job by :meth:`run`; use it as a context manager
    so that it never outlives the download it was started for."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),  # no project folder on its path: it knows only the zip
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )

    def run(self, folder: Path, samples: dict[str, str], pictures: list[str]) -> dict:
        """Each format's rows (answer and logits, or an error) for each picture."""
        job = {
            "folder": str(folder),
            "samples": samples,
            "pictures": [str(Path(p).resolve()) for p in pictures],
        }
        out, err = self._process.communicate(json.dumps(job))
        if self._process.returncode != 0:
            last = (err.strip().splitlines() or ["no message"])[-1]
            return {fmt: [{"error": last}] for fmt in samples}
        return json.loads(out.strip().splitlines()[-1])

    def __enter__(self) -> SampleRunner:
        return self

    def __exit__(self, *exc) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()


@dataclass
class FormatCheck:
    """How the shown code did on the unpacked zip, for one format."""

    format: str
    pictures: int
    same_answer: int  # pictures where it printed the app's answer
    max_abs_diff: float  # largest logit difference from the app's model (inf: it failed)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.same_answer == self.pictures and self.max_abs_diff < 1e-2

    def sentence(self) -> str:
        if self.error:
            return (
                f"**{self.format}**: NOT checked: the code sample failed on the zip ({self.error})"
            )
        verdict = "checked" if self.passed else "NOT checked"
        return (
            f"**{self.format}**: {verdict}: unpacked from the zip into an empty folder, the code "
            f"shown for it gave the app's answer on {self.same_answer} of {self.pictures} pictures "
            f"(largest difference {self.max_abs_diff:.1e})"
        )


@dataclass
class Package:
    """The built download and what was checked."""

    zip_path: Path
    exports: dict[str, dict]  # format -> record in exports.json (checked against PyTorch)
    checks: list[FormatCheck] = field(default_factory=list)

    @property
    def all_passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def summary(self) -> str:
        head = (
            "Checked: every file in the zip works as shown."
            if self.all_passed
            else "Some files in the zip did NOT pass their check (see below)."
        )
        return head + "\n" + "\n".join(f"- {c.sentence()}" for c in self.checks)


Progress = Callable[[float, str], None]


def build_package(run_dir: str | Path, progress: Progress | None = None) -> Package:
    """Export every format (reusing exports whose files are unchanged), zip, check the zip.

    Args:
        run_dir: A finished run.
        progress: Called with (fraction done, what is happening).

    Returns:
        A :class:`Package`; ``zip_path`` is ``RUN/<run name>.zip``.
    """
    say = progress or (lambda _f, _t: None)
    loaded = load_run(run_dir)
    with SampleRunner() as runner:  # importing its libraries while the formats are exported
        return _build(loaded, say, runner)


def _build(loaded: LoadedRun, say: Progress, runner: SampleRunner) -> Package:
    """:func:`build_package` for a loaded run, the zip checked by ``runner``."""
    run = loaded.run_dir
    formats = [f for f in FORMATS if f in loaded.kind.exports]  # what this kind can be
    steps = len(formats) + 2
    records = checked_exports(run)
    to_make = [f for f in formats if f not in records]
    export_formats(  # loaded and traced once for every format
        loaded,
        to_make,
        lambda i, fmt: say(i / steps, f"exporting {fmt} and checking it against PyTorch"),
    )
    records = {f: r for f, r in checked_exports(run).items() if f in formats}
    missing = [f for f in formats if f not in records]
    if missing:
        raise StudioError(f"the {', '.join(missing)} export changed while it was being packed")
    say(len(formats) / steps, "packing the zip")
    target = run / f"{run.name}.zip"
    _write_zip(run, target, with_weights=loaded.kind.python_sample)
    say((len(formats) + 1) / steps, "unpacking the zip and running the code samples on it")
    return Package(target, records, check_zip(target, loaded, runner))


def _without_paths(value):
    """JSON with every absolute path cut to its last part (the file or folder name)."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    return value


def _write_zip(run: Path, target: Path, with_weights: bool = True) -> None:
    """Zip the run's shareable files; ``with_weights`` False leaves ``model.safetensors`` out
    (a kind whose model is another file: its weights there are not what predicts)."""
    fd, tmp = tempfile.mkstemp(dir=run, prefix=".zip-", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in ZIPPED:
                path = run / name
                if not path.is_file() or (name == WEIGHTS and not with_weights):
                    continue
                arcname = f"{run.name}/{name}"
                if name.endswith(".json"):
                    text = json.dumps(_without_paths(json.loads(path.read_text())), indent=2)
                    zf.writestr(arcname, text + "\n")
                else:
                    zf.write(path, arcname)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_zip(
    zip_path: str | Path, loaded: LoadedRun, runner: SampleRunner | None = None
) -> list[FormatCheck]:
    """Unpack ``zip_path`` into an empty folder and run :data:`SAMPLES` there on the run's
    pictures, in a separate Python (``runner``, or one started now); compare with the app's
    model (``loaded``)."""
    import torch

    from ..data.loaders import prepared

    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        top = names[0].split("/", 1)[0] if names else ""
        pictures = check_images(loaded.run_dir, limit=4) or [_noise_picture(zip_path)]
        transform = loaded.transform()
        with torch.no_grad():
            batch = torch.stack([prepared(p, transform) for p in pictures])
            expected = loaded.model(batch).numpy()
        present = {n.split("/", 1)[-1] for n in names}
        code = samples_for(loaded.tasks is not None)
        samples = {
            fmt: code[fmt]
            for fmt in (*FORMATS, "safetensors")
            if FILE_NAMES.get(fmt, WEIGHTS) in present
        }
        with tempfile.TemporaryDirectory(prefix="studio-zip-check-") as empty:
            zf.extractall(empty)
            with runner or SampleRunner() as python:
                results = python.run(Path(empty) / top, samples, pictures)
    answer = _answer_words(loaded)
    return [_compare(fmt, results.get(fmt), expected, answer) for fmt in samples]


def _answer_words(loaded: LoadedRun) -> Callable[[np.ndarray], str]:
    """What the shown code must print for a picture's logits: the class, or every task's
    answer (``material: brick, colour: red``) as the multi-task sample prints it."""
    if loaded.tasks is None:
        return lambda row: loaded.labels[int(row.argmax())]
    tasks, threshold = loaded.tasks, loaded.threshold
    return lambda row: ", ".join(
        f"{name}: {value}" for name, value in tasks.answers(row, threshold).items()
    )


def _noise_picture(near: str | Path) -> str:
    """A fixed picture for runs whose own pictures are gone (kept beside the zip, reused)."""
    from PIL import Image

    path = Path(near).parent / ".check-picture.png"
    if not path.is_file():
        pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    return str(path)


def _compare(fmt: str, rows: list[dict] | None, expected: np.ndarray, answer) -> FormatCheck:
    rows = rows or [{"error": "no result"}]
    errors = [r["error"] for r in rows if "error" in r]
    if errors:
        return FormatCheck(fmt, len(expected), 0, float("inf"), errors[0])
    got = np.array([r["logits"] for r in rows], dtype=np.float64)
    same = sum(r["answer"] == answer(e) for r, e in zip(rows, expected))
    return FormatCheck(fmt, len(expected), same, float(np.abs(got - expected).max()))
