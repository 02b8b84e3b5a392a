"""The run folder: what a run leaves on disk, named in one place, written so a crash never
leaves half a file.

```
RUN/
  config.json        # the settings that made it (TrainConfig, or a derived run's own)
  data_report.json  split.csv  run_info.json
  events.jsonl  history.csv  metrics.json
  model.safetensors  model.json     # the weights, and what kind of model they are (studio.models.kinds)
  labels.json  preprocess.json  MODEL_CARD.md
  exports.json  model.onnx ...      # checked exports (studio.deployment.export)
  compression.json  model.int8.onnx # a compressed run only (studio.compress)
  checkpoint.pt      # while training or after a stop: resume from here
```

Every module reads and writes these names through the constants below, never as literals.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import RunError, StudioError, first_line

__all__ = [
    "run_tasks",
    "CONFIG",
    "DATA_REPORT",
    "SPLIT",
    "RUN_INFO",
    "EVENTS",
    "HISTORY",
    "METRICS",
    "WEIGHTS",
    "MODEL_RECORD",
    "LABELS",
    "PREPROCESS",
    "MODEL_CARD",
    "EXPORTS",
    "CHECKPOINT",
    "OBJECTIVE",
    "ADAPTATION_SETTINGS",
    "INT8_GRAPH",
    "FP16_GRAPH",
    "COMPRESSION",
    "read_optional",
    "require_empty_folder",
    "write_atomic",
    "save_json",
    "load_json",
    "save_checkpoint",
    "load_checkpoint",
    "save_history",
    "require_run",
    "list_runs",
    "describe_run",
    "can_resume",
    "can_resume_adaptation",
]

CONFIG = "config.json"
DATA_REPORT = "data_report.json"
SPLIT = "split.csv"
RUN_INFO = "run_info.json"
EVENTS = "events.jsonl"
HISTORY = "history.csv"
METRICS = "metrics.json"
WEIGHTS = "model.safetensors"
MODEL_RECORD = "model.json"
LABELS = "labels.json"
PREPROCESS = "preprocess.json"
MODEL_CARD = "MODEL_CARD.md"
EXPORTS = "exports.json"
CHECKPOINT = "checkpoint.pt"
# Written when a run trains with more than its labels (a teacher, new pictures): only the
# command that made it can continue it (`studio adapt --resume`), not a plain training.
OBJECTIVE = "objective.json"
ADAPTATION_SETTINGS = "adaptation-settings.json"  # what continuing an adaptation must repeat
INT8_GRAPH = "model.int8.onnx"  # an int8 run's model, run by ONNX Runtime (models.onnx_graph)
FP16_GRAPH = "model.fp16.onnx"  # an fp16 run's model, the same way
COMPRESSION = (
    "compression.json"  # a compressed run: what was done, and its cost beside the parent's
)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(path: str | Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def load_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is damaged ({exc})") from None


def read_optional(run_dir: str | Path, name: str, default: Any = None) -> Any:
    """The JSON file ``name`` of a run, or ``default`` when the run has none (yet): an
    unfinished run has no metrics, an older one no ``model.json``."""
    path = Path(run_dir) / name
    return load_json(path) if path.is_file() else default


def save_checkpoint(path: str | Path, state: dict) -> None:
    """``torch.save`` through :func:`write_atomic`: a kill mid-write keeps the previous file."""
    import io

    import torch  # imported here: the app lists runs without loading torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain data, never pickled code."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file raises many different types
        raise RunError(f"cannot read checkpoint {path}: {first_line(exc)}") from None


def save_history(path: str | Path, rows: list[dict]) -> None:
    if not rows:
        return
    fields = list(rows[0].keys())
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode())


def require_empty_folder(out: str | Path) -> Path:
    """``out`` for a new run: missing, or an empty folder. Anything else is refused, so nothing
    the person made is overwritten (a variant, a student, an adapted model)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StudioError(f"{out} already exists and is not empty; choose another --out")
    return out


def require_run(run_dir: str | Path) -> Path:
    """The run folder, checked to hold a finished model."""
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise RunError(f"{run} is not a run folder")
    for name in (CONFIG, LABELS, WEIGHTS):
        if not (run / name).is_file():
            raise RunError(f"{run} holds no finished model ({name} is missing)")
    return run


def list_runs(root: str | Path) -> list[Path]:
    """Run folders under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / CONFIG).is_file()]
    return sorted(runs, key=lambda p: (p / CONFIG).stat().st_mtime, reverse=True)


def run_tasks(run_dir: str | Path) -> list[str]:
    """The names of a multi-task run's tasks (from ``labels.json``); none for other runs."""
    labels = read_optional(run_dir, LABELS, {})
    tasks = labels.get("tasks") if isinstance(labels, dict) else None
    return (
        [t.get("name", "?") for t in tasks if isinstance(t, dict)]
        if isinstance(tasks, list)
        else []
    )


def can_resume(run_dir: str | Path) -> bool:
    """Whether the run is a training stopped or killed with a checkpoint to continue from (a
    finished run's checkpoint is removed; a stopped run keeps it), by training alone: not an
    adaptation or a distillation (:data:`OBJECTIVE`), which their own commands continue."""
    run = Path(run_dir)
    return (
        (run / CHECKPOINT).is_file() and (run / CONFIG).is_file() and not (run / OBJECTIVE).exists()
    )


def can_resume_adaptation(run_dir: str | Path) -> bool:
    """Whether the run is an adaptation stopped or killed with a checkpoint to continue from."""
    run = Path(run_dir)
    return (run / CHECKPOINT).is_file() and (run / ADAPTATION_SETTINGS).is_file()


def describe_run(run_dir: str | Path) -> dict:
    """What a list of runs shows: pictures, backbone, freeze, epochs run of those planned, and
    accuracy (``None`` while unfinished). Reads only small JSON files."""
    run = Path(run_dir)
    config = load_json(run / CONFIG)
    info = read_optional(run, RUN_INFO, {})
    metrics = read_optional(run, METRICS, {})
    record = read_optional(run, MODEL_RECORD, {})
    return {
        "name": run.name,
        "classes": info.get("classes", []),
        "backbone": config.get("backbone"),
        "freeze": config.get("freeze"),
        "epochs_run": info.get("epochs_run"),
        "epochs": config.get("epochs"),
        "accuracy": metrics.get("accuracy"),
        "kind": record.get("kind", "timm"),
        "parent": record.get("parent"),
    }
