"""Models of any kind load like a trained run: the seam compression and distillation build on."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from studio.deployment.export import export_run, refresh_model_card
from studio.deployment.predict import Predictor
from studio.errors import RunError, StudioError
from studio.inspection.evaluate import evaluate_run
from studio.inspection.explain import Explainer
from studio.models.kinds import KINDS, ModelKind, load_run, model_record, register_kind, save_model
from studio.runs import MODEL_RECORD, describe_run, load_json, save_json


def _with_wide_head(model: nn.Module, classes: int, hidden: int) -> nn.Module:
    features = model.get_classifier().in_features
    model.reset_classifier(0)
    model.classifier = nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )
    return model


def _build_wide(run, record) -> nn.Module:
    """A derived kind whose shapes differ from the backbone's: timm's own loader would fail."""
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(record["backbone"], pretrained=False)
    model = _with_wide_head(model, record["num_classes"], record["hidden"])
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    return model


@pytest.fixture
def derived_run(trained_run, tmp_path):
    """A copy of the shared run whose model was changed in shape and saved as a new kind."""
    register_kind(ModelKind("test-wide-head", _build_wide))
    register_kind(
        ModelKind(
            "test-no-gradients",
            _build_wide,
            gradients=False,
            exports=("onnx",),
            why_not="it runs in another runtime",
        )
    )
    run = tmp_path / "derived"
    shutil.copytree(trained_run, run)
    model = load_run(trained_run).model
    classes = len(load_json(run / "labels.json")["labels"])
    torch.manual_seed(0)
    model = _with_wide_head(model, classes, hidden=16)
    save_model(
        run,
        model,
        backbone="tf_efficientnet_lite0",
        num_classes=classes,
        kind="test-wide-head",
        parent=trained_run.name,
        step={"name": "widen the head", "hidden": 16},
        extra={"hidden": 16},
    )
    yield run
    KINDS.pop("test-wide-head")
    KINDS.pop("test-no-gradients")


def test_a_trained_run_records_its_kind(trained_run):
    record = load_json(trained_run / MODEL_RECORD)
    assert record["kind"] == "timm" and record["parent"] is None
    assert load_run(trained_run).kind.name == "timm"


def test_a_run_made_before_the_record_loads_as_timm(trained_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    (old / MODEL_RECORD).unlink()
    assert model_record(old)["kind"] == "timm"
    loaded = load_run(old)
    assert isinstance(loaded.model.get_classifier(), nn.Linear)


def test_a_derived_kind_evaluates_predicts_explains_and_exports(derived_run, small_example):
    loaded = load_run(derived_run)
    assert loaded.kind.name == "test-wide-head"
    assert isinstance(loaded.model.classifier, nn.Sequential)
    assert describe_run(derived_run)["parent"] == loaded.record["parent"]
    metrics, _ = evaluate_run(derived_run, small_example)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n"] > 0
    picture = next(small_example.rglob("*.jpg"))
    (answer,) = Predictor(derived_run).predict([str(picture)])
    assert answer.error is None and answer.top[0][0] in loaded.labels
    assert Explainer.from_run(derived_run).labels == loaded.labels
    result = export_run(derived_run, "onnx")
    assert result.agreement == 1.0
    card = refresh_model_card(derived_run).read_text()
    assert "test-wide-head model from run" in card and "widen the head" in card


def test_a_kind_says_plainly_what_it_cannot_do(derived_run):
    record = load_json(derived_run / MODEL_RECORD)
    save_json(derived_run / MODEL_RECORD, {**record, "kind": "test-no-gradients"})
    with pytest.raises(StudioError, match="needs? gradients.*another runtime"):
        Explainer.from_run(derived_run)
    with pytest.raises(StudioError, match="exporting to pt2 does not work.*another runtime"):
        export_run(derived_run, "pt2")


def test_an_unknown_kind_is_refused_with_a_reason(derived_run):
    record = load_json(derived_run / MODEL_RECORD)
    save_json(derived_run / MODEL_RECORD, {**record, "kind": "from-the-future"})
    with pytest.raises(RunError, match="from-the-future.*cannot load.*update"):
        load_run(derived_run)
