"""Transfer Studio's engine: load images, fine-tune a pretrained backbone, evaluate, export.

The app, the CLI and the tests all use these same functions::

    from studio import load_dataset, TrainConfig, train, Predictor

    data = load_dataset("assets/example")
    for event in train(TrainConfig(out="runs/demo"), data):
        print(event.kind)
    print(Predictor("runs/demo").predict(["photo.jpg"]))

Modules import lazily here so that ``import studio`` stays quick (torch loads on first use).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": "data",
    "Dataset": "data",
    "DataReport": "data",
    "TrainConfig": "train",
    "train": "train",
    "run_training": "train",
    "Predictor": "predict",
    "export_run": "export",
    "load_run": "models",
    "evaluate_run": "evaluate",
    "catalog": "backbones",
    "create_backbone": "backbones",
    "lr_find": "lr_finder",
    "example_dataset": "example",
    "StudioError": "errors",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
