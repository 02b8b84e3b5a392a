"""The tab contract (studio.ui.tabs) without a browser: every tab builds, says what it shows,
and its refresh fills exactly its views for a fresh workspace."""

from __future__ import annotations

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
