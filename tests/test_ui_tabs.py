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
    assert list(built) == [
        "data",
        "model",
        "train",
        "evaluate",
        "explain",
        "predict",
        "compress",
        "domain",
        "export",
    ]
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
    table, csv_file = predict_many(
        predictors, ws.id, "mine", [picture, str(bad)], lambda *a, **k: None
    )
    rows = table["data"]
    assert rows[0][1] in ("brick", "grass", "gravel") and rows[1][1].startswith("error:")
    assert Path(csv_file).read_text().startswith("picture,class,probability")
    with pytest.raises(Exception, match="train a model first"):
        predict_one(predictors, ws.id, None, picture)


def test_a_bound_handler_keeps_the_type_hints_gradio_reads():
    """Gradio passes gr.SelectData to a parameter by its type hint; a handler bound to the app's
    context (functools.partial) must still show it, or a click would pass nothing."""
    import functools

    from gradio.utils import get_type_hints

    from studio.ui.common import friendly
    from studio.ui.explain_tab import from_top_loss

    handler = friendly(functools.partial(from_top_loss, object()))
    assert get_type_hints(handler)["evt"] is gr.SelectData
    import inspect

    assert list(inspect.signature(handler).parameters) == ["ws_id", "run_name", "task", "evt"]


def test_the_data_handlers_work_without_a_browser(tmp_path, small_example):
    from studio.errors import StudioError
    from studio.ui.data_tab import add_class, add_pictures, delete, show_class

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    status, *views = add_class(ctx, ws.id, "brick")
    assert "Added class **brick**" in status and len(views) == 9
    with pytest.raises(StudioError, match="choose some pictures"):
        add_pictures(ctx, ws.id, "brick", [])
    pictures = [str(p) for p in sorted((small_example / "brick").glob("*.jpg"))[:3]]
    status, *views = add_pictures(ctx, ws.id, "brick", pictures)
    assert len(show_class(ctx, ws.id, "brick")[0]) == 3
    assert show_class(ctx, ws.id, None) == ([], 1, "")
    status, *_ = delete(ctx, ws.id, "brick")
    assert "Deleted" in status and ws.classes() == []


def test_the_evaluate_and_explain_handlers_work_without_a_browser(tmp_path, trained_run):
    import shutil
    from types import SimpleNamespace

    from studio.errors import StudioError
    from studio.ui.evaluate_tab import cell_page, cell_pictures, show_run
    from studio.ui.explain_tab import (
        TRUE,
        Stops,
        redraw,
        refresh_sources,
        run_explain,
        shortcut_report,
    )

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    assert show_run(ctx, ws.id, None)[0].startswith("Train a model first")
    shutil.copytree(trained_run, ws.runs_dir / "mine")
    head, heatmap, table, rows, losses, pairs, _ = show_run(ctx, ws.id, "mine")
    assert head.startswith("## Accuracy") and len(rows) == 3 and heatmap is not None
    title, pictures, number, _, cell = cell_pictures(
        ctx, ws.id, "mine", None, SimpleNamespace(index=(0, 1))
    )
    assert "(correct)" in title and len(pictures) == int(title.split("**")[1].split()[0])
    assert number == 1 and cell_page(ctx, ws.id, "mine", None, cell, 5)[0] == pictures
    assert cell_pictures(ctx, ws.id, "mine", None, SimpleNamespace(index=(0, 0)))[1] == []

    assert refresh_sources(ctx, ws.id)["value"] == "mine"
    assert redraw(None, "positive", 0.5) == []
    with pytest.raises(StudioError, match="only known for pictures from the Evaluate tab"):
        run_explain(ctx, Stops(), ws.id, "mine", losses[0][0], ["gradcam"], TRUE, None, *[0] * 4)
    flagged = SimpleNamespace(
        label="a", images=4, border=0.7, corner=0.5, corner_name="top left", flagged=True,
        message="class a: the evidence is on the edges",
    )  # fmt: skip
    text, table = shortcut_report([flagged], skipped=["x.jpg"])
    assert "Possible shortcuts" in text and "1 picture(s) could not be read" in text
    assert table == [["a", 4, "70%", "50% (top left)", "⚠️"]]


def test_the_train_handlers_read_the_settings_by_name(tmp_path):
    from studio.training.config import TrainConfig
    from studio.ui.train_tab import SETTINGS, settings_from_page, stop_training

    values = [5, 16, 0.001, 0.75, 0, 0, 0.01, 0.1, 0.0, "none", "uncertainty"]
    settings = settings_from_page(values)
    assert list(settings) == list(SETTINGS) and settings["seed"] == 0
    assert isinstance(settings["seed"], int) and isinstance(settings["epochs"], int)
    TrainConfig(data="d", out="o", **settings).validate()  # every name is a config field
    with pytest.raises(ValueError, match="10 settings for 11 fields"):
        settings_from_page(values[:-1])
    ctx = Context(tmp_path)
    _, ws = ctx.open(None)
    assert stop_training(ctx, ws.id) == "Nothing is running (training)."


def test_only_stopped_runs_are_offered_to_continue_and_not_the_one_training(tmp_path):
    from types import SimpleNamespace

    from studio.ui.train_tab import continue_choices, continue_training

    ctx = Context(tmp_path)
    _, ws = ctx.open(None)
    hidden = continue_choices(ctx, ws.id)
    assert hidden[0]["visible"] is False and hidden[1]["visible"] is False
    for name, files in {"finished": ["config.json"], "stopped": ["config.json", "checkpoint.pt"],
                        "training": ["config.json", "checkpoint.pt"],
                        "adapting": ["config.json", "checkpoint.pt", "objective.json"]
                        }.items():  # fmt: skip
        (ws.runs_dir / name).mkdir(parents=True)
        for file in files:
            (ws.runs_dir / name / file).write_text("{}")
    running = SimpleNamespace(done=False, config=SimpleNamespace(out=str(ws.runs_dir / "training")))
    ctx.jobs.hand_over(ws.id, "training", running)
    shown, button = continue_choices(ctx, ws.id)
    assert shown["choices"] == ["stopped"] and shown["value"] == "stopped"
    assert shown["visible"] is True and button["visible"] is True
    with pytest.raises(gr.Error, match="no stopped run"):
        next(continue_training(ctx, ws.id, None, 1))
    with pytest.raises(gr.Error, match="already going"):  # one training a workspace
        next(continue_training(ctx, ws.id, "stopped", 1))


def test_pages_of_a_gallery_never_hold_more_than_a_page():
    from studio.ui.pager import PAGE_SIZE, page_of

    items = list(range(2 * PAGE_SIZE + 4))
    shown, number, where = page_of(items, 1)
    assert shown == items[:PAGE_SIZE] and number == 1
    assert where == f"page 1 of 3 ({len(items)} pictures)"
    assert page_of(items, 99)[:2] == (items[2 * PAGE_SIZE :], 3)  # past the end: the last page
    assert page_of(items, 0)[1] == 1 and page_of(items, None)[1] == 1
    assert page_of(items[:5], 1) == (items[:5], 1, "")  # one page: nothing to say
    assert page_of([], 3) == ([], 1, "")


def test_only_stopped_adaptations_are_offered_on_the_domain_tab(tmp_path):
    from types import SimpleNamespace

    from studio.ui.domain_tab import KIND, continue_adapting, stopped_choices

    ctx = Context(tmp_path)
    _, ws = ctx.open(None)
    for name, files in {"trained": ["config.json", "checkpoint.pt"],
                        "adapted": ["config.json", "adaptation-settings.json"],
                        "adapting": ["config.json", "checkpoint.pt", "adaptation-settings.json",
                                     "objective.json"]}.items():  # fmt: skip
        (ws.runs_dir / name).mkdir(parents=True)
        for file in files:
            (ws.runs_dir / name / file).write_text("{}")
    shown, button = stopped_choices(ctx, ws.id)
    assert shown["choices"] == ["adapting"] and button["visible"] is True
    ctx.jobs.hand_over(ws.id, KIND, SimpleNamespace(done=False))  # one adapting now
    assert stopped_choices(ctx, ws.id)[0]["visible"] is False
    with pytest.raises(gr.Error, match="no stopped adaptation"):
        next(continue_adapting(ctx, ws.id, None))
