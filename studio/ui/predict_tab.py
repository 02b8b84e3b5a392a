"""Predict tab: one picture to a top-k chart, or many to a downloadable CSV."""

from __future__ import annotations

import csv
import functools
import tempfile
import threading

import gradio as gr

from ..errors import StudioError
from ..inspection import charts
from .common import Context, friendly, load_engine, run_picker
from .tabs import TabParts

HELP = """### 6. Try it
Give the model a picture it has never seen: upload one, paste one, or use the webcam. The bars
show how sure it is about each class."""


class Predictors:
    """The loaded model, one per app (several people predict at once: one may swap it)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._loaded: dict = {}
        self._lock = threading.Lock()

    def get(self, ws_id: str | None, name: str | None):
        load_engine()
        from ..deployment.predict import Predictor

        if not name:
            raise StudioError("train a model first, then pick it here")
        key = str(self.ctx.workspace(ws_id).resolve_run(name))
        with self._lock:
            if key not in self._loaded:
                self._loaded.clear()  # keep one model in memory per worker
                self._loaded[key] = Predictor(key)
            return self._loaded[key]


def predict_one(predictors: Predictors, ws_id, name, path):
    """The top-5 chart and a headline for one picture (nothing before a picture is given)."""
    if not path:
        return None, ""
    result = predictors.get(ws_id, name).predict([path], top_k=5)[0]
    if result.error:
        raise StudioError(f"cannot read that picture: {result.error}")
    if result.tasks is not None:  # several tasks: each task's answer
        said = " · ".join(f"{name}: {_task_words(t)}" for name, t in result.tasks.items())
        return charts.top_k_bar(result.top), f"## {said}"
    label, p = result.top[0]
    return charts.top_k_bar(result.top), f"## {label} ({p:.0%} sure)"


def _task_words(task: dict) -> str:
    """One task's answer: the value and how sure (a multi-label task: its tags, or none)."""
    value, p = task["top"][0]
    if task["answer"] == value:
        return f"{value} ({p:.0%} sure)"
    return task["answer"] or "no tag"


def predict_many(predictors: Predictors, ws_id, name, paths, progress=gr.Progress()):
    """A row per picture (unreadable ones say why) and the same rows as a CSV file."""
    if not paths:
        raise StudioError("choose some pictures first")
    results = predictors.get(ws_id, name).predict(
        paths,
        top_k=1,
        progress=lambda done, total: progress(done / total, desc=f"{done} of {total}"),
    )
    headers, rows = _result_rows(results)
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(headers)
        writer.writerows(rows)
    return {"data": rows, "headers": headers}, out.name


def _result_rows(results) -> tuple[list[str], list[list]]:
    """The table of answers: picture, class, probability; with tasks, a column per task."""
    names = next((list(r.tasks) for r in results if r.tasks is not None), None)
    if names is None:
        rows = [
            [
                r.path.rsplit("/", 1)[-1],
                r.top[0][0] if r.top else f"error: {r.error}",
                round(r.top[0][1], 4) if r.top else None,
            ]
            for r in results
        ]
        return ["picture", "class", "probability"], rows
    rows = [
        [r.path.rsplit("/", 1)[-1]]
        + ([r.tasks[n]["answer"] for n in names] if r.tasks else [f"error: {r.error}"] * len(names))
        for r in results
    ]
    return ["picture", *names], rows


def build_predict_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    gr.Markdown(HELP)
    run, refresh = run_picker(ctx, ws_state, "Which trained model to use.", "predict-run")
    with gr.Row():
        image = gr.Image(
            label="Picture",
            type="filepath",
            sources=["upload", "clipboard", "webcam"],
            elem_id="predict-image",
        )
        bars = gr.Plot(label="What the model thinks", elem_id="predict-bars")
    answer = gr.Markdown(elem_id="predict-answer")
    explain_btn = gr.Button("Explain this picture", elem_id="predict-explain", size="sm")
    gr.Markdown("#### Many pictures at once")
    many = gr.File(
        label="Pictures",
        file_count="multiple",
        file_types=["image"],
        height=120,
        elem_id="predict-many",
    )
    batch_btn = gr.Button("Classify all")
    batch_table = gr.Dataframe(
        headers=["picture", "class", "probability"], interactive=False, elem_id="predict-table"
    )
    batch_csv = gr.File(label="Download results (CSV)", elem_id="predict-csv")

    predictors = Predictors(ctx)
    one = friendly(functools.partial(predict_one, predictors))
    batch = friendly(functools.partial(predict_many, predictors))
    image.change(one, [ws_state, run, image], [bars, answer])
    run.change(one, [ws_state, run, image], [bars, answer])
    batch_btn.click(batch, [ws_state, run, many], [batch_table, batch_csv])

    return TabParts(
        [run], refresh, exposes={"explain_button": explain_btn, "image": image, "run": run}
    )
