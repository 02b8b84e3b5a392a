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
    "load_dataset": "data.dataset",
    "Dataset": "data.dataset",
    "DataReport": "data.dataset",
    "TrainConfig": "training.train",
    "train": "training.train",
    "run_training": "training.train",
    "Predictor": "deployment.predict",
    "export_run": "deployment.export",
    "load_run": "models.kinds",
    "evaluate_run": "inspection.evaluate",
    "catalog": "models.backbones",
    "create_backbone": "models.backbones",
    "lr_find": "training.lr_finder",
    "example_dataset": "data.example",
    "StudioError": "errors",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
