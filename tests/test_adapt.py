"""Domain adaptation: the losses against hand computations, then each method on the example's
small set against a shifted copy of it, a stop and a resume, and the CLI's bad inputs."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error

from studio import events as ev
from studio.cli import main
from studio.domain.adapt import adapt_run, density_weights
from studio.domain.example import shifted_copy
from studio.domain.losses import GradientReversal, coral_loss, dann_weight, mk_mmd_loss


def test_coral_matches_a_hand_computation():
    source = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # cov = 4/3 * I
    target = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cov = 1/3 * I
    by_hand = 2 * (4 / 3 - 1 / 3) ** 2 / (4 * 2 * 2)  # two diagonal entries differ by 1
    assert coral_loss(source, target).item() == pytest.approx(by_hand)
    assert coral_loss(source, source + 5).item() == pytest.approx(0.0, abs=1e-7)  # shift-blind


def test_multi_kernel_mmd_matches_a_hand_computation():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [4.0]])
    d2 = [1.0, 9.0, 16.0, 4.0, 9.0, 1.0]  # pairs (0,1) (0,3) (0,4) (1,3) (1,4) (3,4)
    sigma2 = float(np.median(d2))  # 6.5
    k = lambda a: sum(math.exp(-a / (2 * s * sigma2)) for s in (0.25, 0.5, 1, 2, 4))  # noqa: E731
    by_hand = k(1) + k(1) - 2 * (k(9) + k(16) + k(4) + k(9)) / 4
    assert mk_mmd_loss(x, y).item() == pytest.approx(by_hand, rel=1e-5)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.ones(3, requires_grad=True)
    GradientReversal.apply(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    assert dann_weight(0.0) == 0.0 and 0.99 < dann_weight(1.0) < 1.0


def test_density_weights_favour_source_pictures_that_look_like_the_target():
    rng = np.random.default_rng(0)
    source = np.r_[rng.normal(0, 1, (50, 2)), rng.normal(3, 1, (50, 2))]
    target = rng.normal(3, 1, (100, 2))
    w = density_weights(source, target)
    assert w.mean() == pytest.approx(1.0) and w.min() >= 0.0
    assert w[50:].mean() > 3 * w[:50].mean()  # the half that looks like the target counts more


@pytest.fixture(scope="module")
def phone(small_example, tmp_path_factory):
    return shifted_copy(small_example, tmp_path_factory.mktemp("phone") / "pictures", seed=1)


# CORAL end to end runs by default in the stop-and-resume test below and DAN in the Domain
# tab's browser test; here they are slow ones.
@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.slow) for m in ("coral", "dan")] + ["dann", "reweight"],
)
def test_each_method_adapts_and_reports_both_models(method, trained_run, phone, tmp_path):
    out = tmp_path / method
    events = list(adapt_run(trained_run, phone, out, method, eval_dir=phone, epochs=2))
    assert isinstance(events[-1], ev.Finished), events[-1]
    assert [e.epoch for e in events if isinstance(e, ev.Epoch)] == [1, 2]
    record = json.loads((out / "adaptation.json").read_text())
    before, after = record["source_only"], record["adapted"]
    assert record["method"] == method and record["parent"] == trained_run.name
    assert after["accuracy"] >= before["accuracy"] - 0.2  # not far below source-only
    assert before["mmd"] > 0 and after["mmd"] > 0 and set(after["per_class"]) == {
        "brick", "grass", "gravel"}  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "eval" and metrics["accuracy"] == after["accuracy"]
    model = json.loads((out / "model.json").read_text())
    assert model["parent"] == trained_run.name and model["step"]["method"] == method
    assert json.loads((out / "config.json").read_text())["freeze"] == "last:1"
    assert "select_score" in (out / "history.csv").read_text()  # the labelled ones chose
    assert any("choose the epoch kept" in getattr(e, "message", "") for e in events)
    from studio.ui.domain_tab import adaptation_results

    overall, per_class = adaptation_results(out)  # what the Domain tab shows
    assert [row[0] for row in overall] == ["before (the model you trained)", "adapted"]
    assert overall[1][1] == round(after["accuracy"], 3)
    assert {row[0] for row in per_class} == {"brick", "grass", "gravel"}
    for name, was, now, count in per_class:
        assert was == round(before["per_class"][name]["recall"], 3) and count == 12
        assert now == round(after["per_class"][name]["recall"], 3)


def test_a_stopped_adaptation_resumes_to_the_end(trained_run, phone, tmp_path):
    stop, out = threading.Event(), tmp_path / "stopped"
    for event in adapt_run(trained_run, phone, out, "coral", epochs=2, stop=stop):
        if isinstance(event, ev.Epoch):
            stop.set()  # after epoch 1: the run cannot end first, epoch 2 is still to come
    assert (out / "checkpoint.pt").is_file() and (out / "adaptation.json").is_file()
    # Only adapt_run can continue it (the Train tab's Continue would drop the domain loss).
    from studio.runs import can_resume

    assert not can_resume(out) and (out / "objective.json").is_file()
    events = list(adapt_run(trained_run, phone, out, "coral", epochs=2, resume=True))
    assert [e.epoch for e in events if isinstance(e, ev.Epoch)] == [2]
    assert isinstance(events[-1], ev.Finished) and not (out / "checkpoint.pt").exists()
    with pytest.raises(Exception, match="resume with the same method"):
        next(adapt_run(trained_run, phone, out, "dan", resume=True))


def test_bad_adaptations_exit_2_with_one_line(trained_run, phone, tmp_path, capsys):
    empty, strange = tmp_path / "empty", tmp_path / "strange"
    empty.mkdir()
    (strange / "cats").mkdir(parents=True)
    (strange / "cats" / "a.jpg").write_bytes(next(phone.rglob("*.jpg")).read_bytes())
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jpg").write_bytes(b"not a jpeg")
    base = ["adapt", str(trained_run), "--out", str(tmp_path / "new"), "--epochs", "1"]
    cases = [
        (["--target", str(empty), "--method", "coral"], "--target: no pictures in"),
        (["--target", str(tmp_path / "junk"), "--method", "coral"], "could be read"),
        (["--target", str(phone), "--method", "coral", "--eval", str(strange)],
         "--eval has classes the run does not know: cats"),
        (["--target", str(phone), "--method", "coral", "--weight", "0"], "must be above 0"),
        (["--target", str(phone), "--method", "coral", "--resume"], "nothing to resume"),
    ]  # fmt: skip
    for extra, message in cases:
        assert_one_line_error(capsys, base + extra, message)
    assert not (tmp_path / "new").exists()
    assert main(base + ["--target", str(phone), "--method", "coral", "--eval", str(phone)]) == 0
    out = capsys.readouterr().out
    assert "source-only" in out and "  gravel: " in out and "(12 pictures)" in out
