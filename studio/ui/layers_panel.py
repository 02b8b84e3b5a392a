"""The Evaluate tab's look inside: what training changed in each layer group of the chosen run,
and which stages of two models see alike (studio.transfer.layers)."""

from __future__ import annotations

import functools

import gradio as gr

from ..errors import StudioError
from .common import Context, friendly, load_engine, run_choices

__all__ = ["what_training_changed", "compare_two", "build_layers_panel"]

CHANGED_HELP = """Each group of layers of the trained model is compared with the same group of
the pretrained network it started from, on your own pictures: a short bar means the group still
sees your pictures as it did before training (it could have stayed frozen), a long one that
training rebuilt it."""
COMPARE_HELP = """Two different networks can learn the same things in different places. Pick two
models (your trained ones or any backbone that works offline): each square says how alike one
stage of the first and one stage of the second see your pictures (CKA: 1 alike, 0 unrelated);
the ringed square of each row is its closest match."""
CHANGE_HEADERS = ["group", "CKA with the pretrained layer", "weights changed", "in this run"]


def what_training_changed(ctx: Context, ws_id, run_name, progress=gr.Progress()):
    """(bar chart, sentence, table) for the chosen run."""
    if not run_name:
        raise StudioError("train a model first, then pick it above")
    load_engine()
    from ..inspection import charts
    from ..transfer.layers import freezing_advice, trained_epochs, what_changed

    run = ctx.workspace(ws_id).resolve_run(run_name)
    progress(0, desc="comparing each layer group with the pretrained one")
    changes = what_changed(run)
    rows = [[c.group, round(c.cka, 3),
             "new" if c.weight_change is None else f"{c.weight_change:.1%}",
             "frozen" if c.frozen else "trained"] for c in changes]  # fmt: skip
    advice = freezing_advice(changes, trained_epochs(run))
    return charts.layer_changes([c.to_dict() for c in changes]), advice, rows


def model_choices(ctx: Context, ws_id) -> list[tuple[str, str]]:
    """The workspace's runs, then the catalog backbones whose weights are here."""
    from ..transfer.rank import offline_backbones

    runs = [(f"run: {name}", f"run:{name}") for name in run_choices(ctx.workspace(ws_id))]
    return runs + [(f"backbone: {name}", name) for name in offline_backbones()]


def refresh_choices(ctx: Context, ws_id):
    """Filled when the accordion opens, not with the page: which backbones have weights is
    the engine's to say (it may import timm, which only load_engine may do)."""
    load_engine()
    choices = model_choices(ctx, ws_id)
    first = choices[0][1] if choices else None
    second = choices[1][1] if len(choices) > 1 else first
    return gr.update(choices=choices, value=first), gr.update(choices=choices, value=second)


def compare_two(ctx: Context, ws_id, a, b, progress=gr.Progress()):
    """(heatmap, sentence) of CKA between the stages of ``a`` and ``b`` on the pictures."""
    if not a or not b:
        raise StudioError("pick two models to compare")
    ws = ctx.workspace(ws_id)
    if not any(ws.counts().values()):
        raise StudioError("add some pictures on the Data tab first: the models look at them")
    load_engine()
    from ..inspection import charts
    from ..transfer.layers import compare_layers

    source = [ws.resolve_run(x[4:]) if x.startswith("run:") else x for x in (a, b)]
    progress(0, desc="both models look at your pictures")
    result = compare_layers(*source, ws.data_dir)
    alike = sorted(result["most_similar"], key=lambda r: -r[2])[:3]
    pairs = "; ".join(f"{x} ~ {y} ({v:.2f})" for x, y, v in alike)
    said = (f"On {result['pictures']} of your pictures, the most alike stages are: {pairs}. "
            "Stages that match closely learnt the same kind of thing.")  # fmt: skip
    return charts.cka_heatmap(result), said


def build_layers_panel(ctx: Context, ws_state: gr.State, run: gr.Dropdown) -> None:
    """Two accordions under the run's results."""
    bind = functools.partial
    with gr.Accordion("Inside the model: what training changed", open=False,
                      elem_id="layers-changed"):  # fmt: skip
        gr.Markdown(CHANGED_HELP)
        go = gr.Button("Compare with the pretrained network", elem_id="layers-go")
        advice = gr.Markdown(elem_id="layers-advice")
        with gr.Row():
            bars = gr.Plot(label="Layer by layer", elem_id="layers-bars")
            table = gr.Dataframe(headers=CHANGE_HEADERS, interactive=False,
                                 elem_id="layers-table")  # fmt: skip
    with gr.Accordion("Compare the layers of two models", open=False,
                      elem_id="layers-compare") as comparing:  # fmt: skip
        gr.Markdown(COMPARE_HELP)
        with gr.Row():
            a = gr.Dropdown(label="First model (rows)", choices=[], elem_id="layers-a")
            b = gr.Dropdown(label="Second model (columns)", choices=[], elem_id="layers-b")
        compare = gr.Button("Compare their layers", elem_id="layers-compare-go")
        said = gr.Markdown(elem_id="layers-said")
        heatmap = gr.Plot(label="Which stages see alike", elem_id="layers-heatmap")
    go.click(friendly(bind(what_training_changed, ctx)), [ws_state, run], [bars, advice, table])
    compare.click(friendly(bind(compare_two, ctx)), [ws_state, a, b], [heatmap, said])
    comparing.expand(friendly(bind(refresh_choices, ctx)), ws_state, [a, b])
