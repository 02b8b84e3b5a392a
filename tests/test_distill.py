"""Distillation: a trained run teaches a student, which is then a run like any other, shown beside
the same student trained without the teacher."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch
from helpers import assert_one_line_error

from studio import events as ev
from studio.compress.distill import TeacherTargets, distill_loss, distill_run
from studio.compress.report import comparison
from studio.inspection.explain import Explainer
from studio.models.kinds import load_run


@pytest.fixture(scope="module")
def distilled(trained_run, tmp_path_factory):
    """Lite0 teaching Lite0 (the offline catalog's quickest pair), its last block and head
    trained, with feature matching on: every part of the recipe runs."""
    out = tmp_path_factory.mktemp("distill") / "student"
    events = list(distill_run(trained_run, out, epochs=2, freeze="last:1", features=0.5, alpha=0.6))
    assert isinstance(events[-1], ev.Finished), events[-1]
    return out, events


def test_a_student_learns_from_its_teacher_and_is_a_run_like_any_other(distilled, trained_run):
    out, events = distilled
    kinds = [e.kind for e in events]
    assert kinds.index("caching") < kinds.index("started") < kinds.index("epoch")  # teacher first
    assert [e.epoch for e in events if isinstance(e, ev.Epoch)] == [1, 2]  # the alone run: notes
    assert any("the student alone: epoch 2/2" in getattr(e, "message", "") for e in events)
    record = json.loads((out / "compression.json").read_text())
    step = record["step"]
    assert record["method"] == "distill" and record["parent"]["run"] == trained_run.name
    assert step["student"] == "tf_efficientnet_lite0" and step["alpha"] == 0.6
    assert step["temperature"] == 4.0 and step["features"] == 0.5 and step["epochs"] == 2
    assert step["teacher_seconds"] > 0 and step["student_seconds"] > 0
    alone = record["alone"]
    assert alone["split"] == "test" and 0 <= alone["accuracy"] <= 1 and alone["best_epoch"] >= 1
    assert record["accuracy"] >= 0.5  # chance is 1/3
    model = json.loads((out / "model.json").read_text())
    assert model["kind"] == "timm" and model["parent"] == trained_run.name
    config = json.loads((out / "config.json").read_text())
    assert config["freeze"] == "last:1" and config["head_solver"] == "sgd"
    assert "timm model from run" in (out / "MODEL_CARD.md").read_text()
    rows = comparison([out])
    assert [r["label"] for r in rows] == ["original", "student lite0"]
    picture = json.loads((out / "metrics.json").read_text())["predictions"][0]["path"]
    maps = Explainer.from_run(out).explain(picture, ["gradcam"]).maps  # gradients flow
    assert maps["gradcam"].shape == (224, 224)


def test_the_soft_loss_is_the_temperature_scaled_kl_divergence():
    student, teacher, t = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.5, 0.0]]), 2.0

    def softmax(v):
        e = [math.exp(x / t) for x in v]
        return [x / sum(e) for x in e]

    p, q = softmax(teacher[0].tolist()), softmax(student[0].tolist())
    by_hand = t * t * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert distill_loss(student, teacher, t).item() == pytest.approx(by_hand, rel=1e-5)
    assert distill_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-6)


def test_the_teacher_answers_each_training_picture_once_in_split_order(trained_run):
    parent = load_run(trained_run)
    dataset = parent.dataset()
    gen = TeacherTargets.compute(parent, dataset, features=True)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            targets = done.value
            break
    assert targets.logits.shape == (len(dataset.train), 3)
    assert targets.features.shape == (len(dataset.train), 1280)  # Lite0's pooled width
    from studio.data.images import open_rgb

    first = parent.transform()(open_rgb(dataset.train[0].path)).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(parent.model(first)[0], targets.logits[0], atol=1e-4)


def test_bad_distillations_exit_2_with_one_line_and_leave_nothing(trained_run, tmp_path, capsys):
    distill = ["compress", str(trained_run), "--method", "distill", "--out", str(tmp_path / "s")]
    cases = [
        (["--alpha", "1.5"], "must be in [0, 1]"),
        (["--temperature", "0"], "temperature must be above 0"),
        (["--student", "no_such_net"], "unknown backbone 'no_such_net'"),
        (["--student", "resnet18"], "has no pretrained weights on this computer"),
        (["--features", "1"], "needs student layers that learn"),  # the teacher froze them all
    ]
    for extra, message in cases:
        assert_one_line_error(capsys, distill + extra, message)
    assert not (tmp_path / "s").exists()


def test_a_stop_before_the_first_epoch_keeps_nothing(trained_run, tmp_path):
    stop, out = threading.Event(), tmp_path / "stopped"
    seen = []
    for event in distill_run(trained_run, out, epochs=2, alone=False, stop=stop):
        seen.append(event)
        if isinstance(event, ev.Caching) and event.done:
            stop.set()  # during the teacher's pass: the student never starts
    assert isinstance(seen[-1], ev.Stopped) and not out.exists()
    assert not any(isinstance(e, ev.Epoch) for e in seen)


def test_the_compress_tab_offers_students_with_weights_here_and_shows_the_twin(
    distilled, trained_run, tmp_path
):
    import shutil

    from studio.ui.common import Context
    from studio.ui.compress_tab import family_view, folder_suffix, show_settings

    *boxes, teach, students = show_settings("distill")
    assert teach["visible"] and not any(b["visible"] for b in boxes)
    offered = [name for _, name in students["choices"]]
    assert "tf_efficientnet_lite0" in offered and "resnet18" not in offered  # no weights here
    assert folder_suffix("distill", "tf_efficientnet_lite0") == "student-lite0"
    assert folder_suffix("sparsify", "") == "sparsify" and folder_suffix("quantize", "") == "int8"
    assert folder_suffix("quantize", "", "fp16") == "fp16"
    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    shutil.copytree(trained_run, ws.runs_dir / trained_run.name)
    shutil.copytree(distilled[0], ws.runs_dir / "mine-student-lite0")
    table, _, _ = family_view(ctx, ws.id, trained_run.name)
    alone = json.loads((distilled[0] / "compression.json").read_text())["alone"]["accuracy"]
    assert [row[1] for row in table] == ["original", "distill"]
    assert table[0][-1] == "" and table[1][-1] == round(alone, 3)


def test_another_architecture_learns_from_the_teacher_through_a_feature_adapter(
    trained_run, tmp_path
):
    """EfficientNet teaching ResNet-18 (512 pooled features against the teacher's 1280): the
    adapter bridges the widths. ResNet's ImageNet weights are not on this computer, so the
    student starts from a weights file (random here: the mechanics are what is tested)."""
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    out = tmp_path / "resnet-student"
    events = list(
        distill_run(
            trained_run,
            out,
            student="resnet18",
            student_weights=str(weights),
            epochs=1,
            freeze="last:1",
            features=1.0,
            alone=False,
        )  # fmt: skip
    )
    assert isinstance(events[-1], ev.Finished), events[-1]
    record = json.loads((out / "compression.json").read_text())
    assert record["step"]["student"] == "resnet18" and record["alone"] is None  # not asked
    assert record["params"] != record["parent"]["params"]  # another network, measured as itself
    assert load_run(out).model.get_classifier().in_features == 512
