"""The tab contract (studio.ui.tabs) without a browser: every tab builds, says what it shows,
and its refresh fills exactly its views for a fresh workspace."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from studio.ui.app import TABS, build_app
from studio.ui.common import Context
from studio.ui.tabs import TabParts, as_values


def test_every_tab_builds_and_its_refresh_fills_its_views(tmp_path):
    ctx = Context(tmp_path)
    _, ws = ctx.open(None)
    built: dict[str, TabParts] = {}
    with gr.Blocks(), gr.Tabs():
        ws_state = gr.State(None)
        for spec in TABS:
            with gr.Tab(spec.title, id=spec.id) as tab:
                built[spec.id] = spec.build(ctx, ws_state, tab, built)
    assert list(built) == ["data", "model", "train", "evaluate", "explain", "predict", "export"]
    for name, parts in built.items():
        assert isinstance(parts, TabParts) and parts.refresh is not None, name
        if parts.on_open:  # what the app calls when a browser opens its workspace
            assert len(as_values(parts.refresh(ws.id), parts.views)) == len(parts.views), name
    assert "status" in built["data"].exposes  # where the app greets the person
    assert built["explain"].wire is not None  # Evaluate and Predict open pictures there


def test_a_refresh_that_does_not_match_its_views_is_caught():
    with pytest.raises(ValueError, match="2 values for 3 views"):
        as_values((1, 2), [object()] * 3)
    assert as_values({"value": 1}, [object()]) == ({"value": 1},)


def test_the_app_is_built_from_the_list(tmp_path):
    demo = build_app(tmp_path)
    labels = [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert [spec.title for spec in TABS] == [label for label in labels if "·" in label]


def test_the_predict_handlers_work_without_a_browser(tmp_path, trained_run, small_example):
    import shutil

    from studio.ui.predict_tab import Predictors, predict_many, predict_one

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    shutil.copytree(trained_run, ws.runs_dir / "mine")
    predictors = Predictors(ctx)
    picture = str(next(small_example.rglob("*.jpg")))
    chart, headline = predict_one(predictors, ws.id, "mine", picture)
    assert chart is not None and "% sure" in headline
    assert predict_one(predictors, ws.id, "mine", None) == (None, "")
    (bad := tmp_path / "notes.jpg").write_text("not a picture")
    rows, csv_file = predict_many(
        predictors, ws.id, "mine", [picture, str(bad)], lambda *a, **k: None
    )
    assert rows[0][1] in ("brick", "grass", "gravel") and rows[1][1].startswith("error:")
    assert Path(csv_file).read_text().startswith("picture,class,probability")
    with pytest.raises(Exception, match="train a model first"):
        predict_one(predictors, ws.id, None, picture)
