"""Evaluate tab: how good the model is, and a confusion matrix whose cells show their pictures."""

from __future__ import annotations

import functools

import gradio as gr

from ..data.tasks import flat_name, task_metrics
from ..errors import StudioError
from ..inspection import charts
from .common import Context, friendly, run_metrics, run_picker
from .layers_panel import build_layers_panel
from .pager import bind_pager, build_pager, page_of
from .tabs import TabParts

HELP = """### 4. How good is it?
These numbers come from pictures the model never learnt from. In the **confusion matrix** each
row is the true class and each column what the model said; everything off the diagonal is a
mistake. **Click a cell in the table** to see exactly which pictures ended up there."""


def _loss_caption(row: dict) -> str:
    if row.get("correct"):
        return f"{row['true']} ✓ ({row['confidence']:.0%} sure)"
    return f"{row['true']} → {row['predicted']} ({row['confidence']:.0%})"


def show_run(ctx: Context, ws_id, name, task=None):
    """(headline, heatmap, confusion table, per-class rows, hardest pictures, confused pairs,
    the task picker); a multi-task run shows one task's matrix and classes at a time."""
    if not name:
        return "Train a model first (Train tab).", None, None, None, [], None, gr.update()
    whole = run_metrics(ctx.workspace(ws_id), name)
    m, task = task_metrics(whole, task)
    labels = m["labels"]
    head = (
        f"## Accuracy {whole['accuracy']:.1%} · macro F1 {whole['macro_f1']:.2f}\n"
        f"on {whole['n']} {whole['split']} pictures."
    )
    picker = gr.update(visible=False)
    if task is not None:
        head = (
            head.replace("\n", " (mean over the tasks)\n")
            + "\n\n"
            + "\n".join(
                f"- **{n}**: accuracy {t['accuracy']:.1%} · macro F1 {t['macro_f1']:.2f}"
                for n, t in whole["tasks"].items()
            )
        )
        picker = gr.update(choices=list(whole["tasks"]), value=task, visible=True)
    if m.get("task") == "multilabel":
        return head, None, None, None, [], None, picker
    matrix = [[labels[i]] + row for i, row in enumerate(m["confusion_matrix"])]
    rows = [
        [k, round(v["precision"], 3), round(v["recall"], 3), round(v["f1"], 3), v["support"]]
        for k, v in m["per_class"].items()
    ]
    return (
        head,
        charts.confusion_matrix(m["confusion_matrix"], labels),
        {"data": matrix, "headers": ["true \\ predicted"] + labels},
        rows,
        [(r["path"], _loss_caption(r)) for r in m["top_losses"]],
        [[p["true"], p["predicted"], p["count"]] for p in m["most_confused"]],
        picker,
    )


def _cell_hits(ctx: Context, ws_id, name, task, cell) -> tuple[str, list]:
    """The title and the predictions behind the cell ``(row, column)`` of the table."""
    m, _ = task_metrics(run_metrics(ctx.workspace(ws_id), name), task)
    row, col = cell
    if col == 0:
        return "Click a number, not a class name.", []
    true, predicted = m["labels"][row], m["labels"][col - 1]
    hits = [
        p for p in m.get("predictions", []) if p["true"] == true and p["predicted"] == predicted
    ]
    title = f"**{len(hits)} picture(s) of {true} predicted as {predicted}**" + (
        " (correct)" if true == predicted else ""
    )
    return title, hits


def cell_page(ctx: Context, ws_id, name, task, cell, page=1) -> tuple[list, int, str]:
    """A page of the pictures behind ``cell`` (a big split's diagonal holds thousands)."""
    if not cell:
        return [], 1, ""
    shown, number, where = page_of(_cell_hits(ctx, ws_id, name, task, cell)[1], page)
    return [(p["path"], f"{p['confidence']:.0%}") for p in shown], number, where


def cell_pictures(ctx: Context, ws_id, name, task, evt: gr.SelectData):
    """(title, the first page of the clicked cell's pictures, its number, where it is, the
    cell: kept for the page buttons)."""
    cell = tuple(evt.index)
    title, _ = _cell_hits(ctx, ws_id, name, task, cell)
    return title, *cell_page(ctx, ws_id, name, task, cell), cell


def loss_maps(ctx: Context, ws_id, name, task=None, progress=gr.Progress()):
    """Grad-CAM over each hardest picture for what the model said (of the task shown); the
    unreadable ones named."""
    if not name:
        raise StudioError("train a model first (Train tab)")
    ws = ctx.workspace(ws_id)
    m, task = task_metrics(run_metrics(ws, name), task)
    rows = m.get("top_losses", [])
    if not rows or not isinstance(rows[0]["predicted"], str):
        raise StudioError("maps are shown for single-label tasks with evaluated pictures")
    explainer, lock = ctx.explainers.get(ws, name)
    with lock:
        shown = explainer.overlays(
            [
                (r["path"], flat_name(task, r["predicted"]) if task else r["predicted"])
                for r in rows
            ],
            progress=lambda f: progress(f, desc="drawing maps"),
        )
    gallery, missing = [], []
    for (picture, note), r in zip(shown, rows):
        if picture is None:
            missing.append(f"- {r['path']}: {note}")
        else:
            gallery.append((picture, f"{r['true']} → {r['predicted']}"))
    text = "**No map for:**\n" + "\n".join(missing) if missing else ""
    return gallery, text


def _hardest_pictures() -> dict:
    """The top losses, their maps on demand, and the most confused pairs."""
    gr.Markdown(
        "#### Hardest pictures (mistakes first, then the ones it was least sure about)\n"
        "Click one to see, on the Explain tab, what the model looked at."
    )
    c = {}
    c["losses"] = gr.Gallery(
        label="Top losses (true → said)", columns=6, height=240, elem_id="top-losses"
    )
    c["explain_all"] = gr.Button(
        "Show what the model looked at in each", elem_id="eval-explain-all"
    )
    c["maps"] = gr.Gallery(
        label="What made it say that (Grad-CAM: bright = evidence for its answer)",
        columns=6,
        height=240,
        elem_id="top-loss-maps",
    )
    c["maps_note"] = gr.Markdown(elem_id="top-loss-maps-note")
    c["confused"] = gr.Dataframe(
        headers=["true class", "taken for", "times"], label="Most confused pairs", interactive=False
    )
    return c


def build_evaluate_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    gr.Markdown(HELP)
    run, refresh = run_picker(ctx, ws_state, "Which trained model to look at.", "eval-run")
    headline = gr.Markdown(elem_id="eval-headline")
    task = gr.Radio(
        label="Task shown below", choices=[], visible=False, elem_id="eval-task",
        info="This model answers several questions: the matrix and table are for this one.",
    )  # fmt: skip
    with gr.Row():
        heatmap = gr.Plot(label="Confusion matrix")
        with gr.Column():
            table = gr.Dataframe(
                label="Confusion matrix: click a cell", interactive=False, elem_id="confusion-table"
            )
            cell_title = gr.Markdown()
            cell = gr.State(None)
            cell_pager = build_pager(
                "cell-gallery", label="Pictures in this cell", columns=4, height=240
            )
    per_class = gr.Dataframe(
        headers=["class", "precision", "recall", "F1", "pictures"],
        label="Per class",
        interactive=False,
    )
    h = _hardest_pictures()
    build_layers_panel(ctx, ws_state, run)
    bind = functools.partial
    outputs = [headline, heatmap, table, per_class, h["losses"], h["confused"], task]
    run.change(friendly(bind(show_run, ctx)), [ws_state, run], outputs)
    task.input(friendly(bind(show_run, ctx)), [ws_state, run, task], outputs)
    table.select(
        friendly(bind(cell_pictures, ctx)),
        [ws_state, run, task],
        [cell_title, *cell_pager.outputs, cell],
    )
    bind_pager(cell_pager, friendly(bind(cell_page, ctx)), [ws_state, run, task, cell])
    h["explain_all"].click(
        friendly(bind(loss_maps, ctx)), [ws_state, run, task], [h["maps"], h["maps_note"]]
    )
    return TabParts([run], refresh, exposes={"losses": h["losses"], "run": run, "task": task})
