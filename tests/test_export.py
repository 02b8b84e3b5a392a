"""Exports check themselves against PyTorch; runs load back without unpickling."""

from __future__ import annotations

import json

import pytest

from studio.errors import RunError, StudioError
from studio.export import export_run, load_run
from studio.predict import Predictor


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_export_agrees_with_pytorch(trained_run, fmt):
    result = export_run(trained_run, fmt)
    assert result.images >= 6  # real validation/test images were used, not noise
    assert result.agreement == 1.0
    assert result.max_abs_diff < 1e-3
    records = json.loads((trained_run / "exports.json").read_text())
    assert any(r["format"] == fmt and r["agreement"] == 1.0 for r in records)
    card = (trained_run / "MODEL_CARD.md").read_text()
    assert f"| {fmt} |" in card


def test_model_card_and_files_describe_the_run(trained_run):
    card = (trained_run / "MODEL_CARD.md").read_text()
    for needle in ["tf_efficientnet_lite0", "backbone", "Accuracy", "brick", "Limits", "seed 0"]:
        assert needle in card, needle
    pre = json.loads((trained_run / "preprocess.json").read_text())
    assert pre["crop"] == 224 and pre["mean"] == [0.5, 0.5, 0.5]
    labels = json.loads((trained_run / "labels.json").read_text())
    assert labels["labels"] == ["brick", "grass", "gravel"]


def test_load_run_and_predict(trained_run, example):
    loaded = load_run(trained_run)
    assert loaded.labels == ["brick", "grass", "gravel"]
    predictions = Predictor(loaded).predict(sorted((example / "gravel").glob("*.jpg"))[-3:])
    assert [p.top[0][0] for p in predictions].count("gravel") >= 2
    with pytest.raises(StudioError):
        Predictor(loaded).predict([], top_k=0)


def test_broken_runs_are_refused(tmp_path, trained_run):
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ["config.json", "labels.json"]:
        (broken / name).write_text((trained_run / name).read_text())
    (broken / "model.safetensors").write_bytes(b"garbage")
    (broken / "preprocess.json").write_text((trained_run / "preprocess.json").read_text())
    with pytest.raises(RunError, match="cannot load"):
        load_run(broken)
    with pytest.raises(StudioError, match="unknown export format"):
        export_run(trained_run, "tflite")
