"""Which layers carry over: linear CKA against its definition and invariances, what a real
fine-tuning changed per group, the freezing advice's arithmetic, two models compared, the CLI
and the Evaluate tab's handlers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_one_line_error

from studio.cli import main
from studio.transfer.layers import (
    GroupChange,
    freezing_advice,
    linear_cka,
    training_cost,
    what_changed,
)


def test_linear_cka_matches_its_definition_and_invariances():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 5)), rng.normal(size=(20, 8))
    xc, yc = x - x.mean(0), y - y.mean(0)
    by_definition = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert linear_cka(x, y) == pytest.approx(by_definition, abs=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # a rotation
    assert linear_cka(x, 3.0 * x @ q + 7.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x) == pytest.approx(1.0)
    # Two pictures' worth by hand: centred rows are ±d/2, so K and L are rank one and CKA = 1.
    assert linear_cka(np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[5.0], [1.0]])) == 1.0
    assert linear_cka(rng.normal(size=(400, 10)), rng.normal(size=(400, 10))) < 0.1


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, small_example):
    """A run whose last three backbone groups (stage5 to stage7) and head trained."""
    from studio.training.train import TrainConfig, run_training

    out = tmp_path_factory.mktemp("layers") / "tuned"
    run_training(TrainConfig(data=str(small_example), out=str(out), epochs=2, augment="none",
                             freeze="last:3", batch_size=8, lr=3e-3))  # fmt: skip
    return out


def test_what_fine_tuning_changed_per_group(tuned_run):
    changes = what_changed(tuned_run, max_pictures=36)
    names = [c.group for c in changes]
    assert names[0] == "stem" and names[-1] == "head"
    trained = {c.group for c in changes if not c.frozen}
    assert trained == {names[-4], names[-3], names[-2], "head"}
    for c in changes:
        if c.frozen:  # exactly the pretrained layers
            assert c.weight_change == 0.0 and c.cka == pytest.approx(1.0, abs=1e-9)
        assert c.ms >= 0
    moved = [c for c in changes if not c.frozen and c.group != "head"]
    assert all(c.weight_change > 0 and c.cka < 1.0 for c in moved)
    assert changes[-1].weight_change is None  # the new classifier
    said = freezing_advice(changes, epochs=2)
    assert said.startswith(f"The first {len(names) - 4} group(s) were frozen in this run.")


def _change(group, cka, frozen, ms):
    return GroupChange(group, cka, 0.0 if frozen else 0.1, frozen, ms)


def test_the_freezing_advice_is_worked_out_from_the_runs_numbers():
    changes = [_change("stem", 1.0, True, 10.0), _change("stage1", 0.99, False, 20.0),
               _change("stage2", 0.97, False, 20.0), _change("stage3", 0.5, False, 8.0),
               _change("head", 0.0, False, 2.0)]  # fmt: skip
    # Frozen stem cached once, four groups trained 5 epochs (forward + backward = 3 forwards).
    assert training_cost(changes, 1, 5) == 10.0 + 5 * 3 * 50.0
    said = freezing_advice(changes, epochs=5)
    speed = (10.0 + 15 * 50.0) / (50.0 + 15 * 10.0)
    assert "stage1, stage2 barely changed" in said and f"about {speed:.1f}× faster" in said
    rebuilt = [_change("stem", 0.6, False, 10.0), _change("head", 0.0, False, 1.0)]
    assert "freezing more would likely cost accuracy" in freezing_advice(rebuilt, epochs=5)
    head_only = [_change("stem", 1.0, True, 10.0), _change("head", 0.0, False, 1.0)]
    assert "nothing more to freeze" in freezing_advice(head_only, epochs=5)


def test_two_models_compared_stage_by_stage_by_the_cli(tuned_run, small_example, tmp_path, capsys):
    out, html = tmp_path / "cka.json", tmp_path / "cka.html"
    argv = ["layers", "--compare", str(tuned_run), "tf_efficientnet_lite1", str(small_example),
            "--max-pictures", "24", "--out", str(out), "--html", str(html)]  # fmt: skip
    assert main(argv) == 0
    assert "is most like" in capsys.readouterr().out
    result = json.loads(out.read_text())
    matrix = np.array(result["cka"])
    assert matrix.shape == (len(result["groups_a"]), len(result["groups_b"]))
    assert ((matrix >= 0) & (matrix <= 1 + 1e-9)).all() and result["pictures"] == 24
    for a, b, value in result["most_similar"]:
        row = result["groups_a"].index(a)
        assert value == matrix[row].max() == matrix[row, result["groups_b"].index(b)]
    assert html.stat().st_size > 10_000  # a self-contained page
    assert main(["layers", str(tuned_run), "--max-pictures", "24", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [set(r) for r in rows][0] == {"group", "cka", "weight_change", "frozen"}
    cases = [
        ([], "give a RUN, or --compare A B DATA"),
        ([str(tuned_run), "--compare", "a", "b", "c"], "not both"),
        (["--compare", "nosuch", "tf_efficientnet_lite0", str(small_example)],
         "neither a run folder nor a catalog backbone"),
    ]  # fmt: skip
    for args, message in cases:
        assert_one_line_error(capsys, ["layers", *args], message)


def test_the_evaluate_tabs_look_inside(tuned_run, small_example, tmp_path):
    import shutil

    from studio.ui.common import Context
    from studio.ui.layers_panel import compare_two, model_choices, what_training_changed

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    shutil.rmtree(ws.data_dir)
    shutil.copytree(small_example, ws.data_dir)
    shutil.copytree(tuned_run, ws.runs_dir / "tuned")
    quiet = lambda *a, **k: None  # noqa: E731
    figure, advice, rows = what_training_changed(ctx, ws.id, "tuned", progress=quiet)
    assert len(figure.data[0].x) == len(rows) and rows[-1][2:] == ["new", "trained"]
    assert "were frozen in this run" in advice
    choices = [value for _, value in model_choices(ctx, ws.id)]
    assert choices[0] == "run:tuned" and "tf_efficientnet_lite0" in choices
    heatmap, said = compare_two(ctx, ws.id, "run:tuned", "tf_efficientnet_lite0", progress=quiet)
    assert said.startswith("On 36 of your pictures, the most alike stages are")
    assert len(heatmap.data[0].z) == len(rows)


def test_cka_of_a_model_with_itself_is_one_and_with_a_reinitialised_copy_is_low(small_example):
    import torch

    from studio.data.images import open_rgb
    from studio.data.loaders import build_transform
    from studio.models.backbones import create_backbone, data_config
    from studio.transfer.layers import group_outputs

    trained, _ = create_backbone("tf_efficientnet_lite0")
    torch.manual_seed(0)
    fresh, _ = create_backbone("tf_efficientnet_lite0", pretrained=False)
    tf = build_transform(data_config(trained), "none")
    images = torch.stack([tf(open_rgb(p)) for p in sorted(small_example.rglob("*.jpg"))])
    groups, ours, _ = group_outputs(trained.eval(), images)
    _, again, _ = group_outputs(trained.eval(), images)
    _, other, _ = group_outputs(fresh.eval(), images)
    for name in ours:
        assert linear_cka(ours[name], again[name]) == pytest.approx(1.0)
    # Random weights still pass on the pictures' plainest statistics (the stem's output is
    # nearly the picture itself), but from the second stage on they see them differently.
    later = [g.name for g in groups][2:]
    with_random = [linear_cka(ours[name], other[name]) for name in later]
    assert max(with_random) < 0.9 and np.mean(with_random) < 0.75
