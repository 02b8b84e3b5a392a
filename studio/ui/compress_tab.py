"""Compress tab: smaller, faster variants of a trained model, and one chart to choose between them."""

from __future__ import annotations

import functools
import re

import gradio as gr

from ..errors import StudioError
from .common import (
    Context,
    as_text,
    follow_job,
    friendly,
    job_status,
    load_engine,
    run_choices,
    run_picker,
    start_job,
    stop_job,
)
from .tabs import TabParts

HELP = """### 7. Make it smaller and faster
Pick a trained model and a way to shrink it, then press **Make the variant**. Each variant is a
new model beside the original (nothing is replaced): **Prune** removes whole channels from the
network and then trains it a little to recover; **Quantize** stores and computes it with 8-bit
integers (or 16-bit floats: half the file, slower on most laptops; or *bfloat16*, for apps
that run PyTorch, where the processor has it) instead of 32-bit numbers; **Distill** trains a smaller network (the *student*) to give
the answers your model (the *teacher*) gives, and trains the same student without the teacher
too, so you see what the teacher added. The chart shows every variant's accuracy against its speed,
measured on this computer; the green ones are the best trade-offs. Pick one to export it.
Pruning needs pictures to win its accuracy back: with a few dozen a class expect to lose some
(the table says how much)."""

METHODS = [
    ("Quantize: 8-bit integers or 16-bit floats (seconds)", "quantize"),
    ("Prune channels, then recover", "prune"),
    ("Zero the smallest weights (a smaller zip, not faster)", "sparsify"),
    ("Teach a smaller student (distillation)", "distill"),
]
NUMBER_FORMATS = [
    ("int8, calibrated on your pictures (the fastest here)", "int8"),
    ("int8 of the linear layers only (dynamic: for transformers, not convolutions)",
     "int8-dynamic"),
    ("16-bit floats (half the file; faster only on GPUs and phones)", "fp16"),
    ("bfloat16, run by PyTorch (half the file; faster than float in PyTorch, not than int8)",
     "bf16"),
]  # fmt: skip
SPARSITY_NOTE = """*Zeroing weights* (unstructured sparsity) keeps every layer's shape: the file zips much
smaller, but the model is **not faster** on this computer (it still multiplies by every zero): the
table shows both, measured. To make it faster, prune channels instead."""
IMPORTANCES = [
    ("weight size", "magnitude"),
    ("batch-norm scale", "bn"),
    ("effect on the loss (Taylor)", "taylor"),
]
TABLE_HEADERS = [
    "model", "made by", "accuracy", "macro F1", "parameters (M)", "MACs (M)", "file (MB)",
    "zipped (MB)", "ms a picture", "ms for 32", "best trade-off", "student alone",
]  # fmt: skip
STATUS_WHILE_TRAINING = {
    "prune": "Recovering the accuracy pruning cost.",
    "distill": "The student is learning from its teacher.",
}
KIND = "compression"


def folder_suffix(method: str, student: str, to: str = "int8") -> str:
    """The end of a variant's folder name: ``int8``, ``fp16``, ``prune``, ``student-lite0``."""
    if method == "distill":
        short = student.removeprefix("tf_").replace("efficientnet_", "")
        return f"student-{short}"
    return method if method in ("prune", "sparsify") else to


def variant_dir(ws, run_name: str, method: str):
    """A new folder beside the run for its variant: ``<run>-int8``, ``<run>-pruned30-2``..."""
    base = ws.runs_dir / re.sub(r"[^\w\-.]", "_", f"{run_name[:90]}-{method}")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _stream(run, out, method: str, ratio, importance, global_pruning, epochs, calibration,
            options: dict):  # fmt: skip
    """The engine's generator for the chosen method, as a job's ``stream(stop)``."""
    from ..compress.distill import distill_run
    from ..compress.prune import prune_run
    from ..compress.quantize import quantize_run
    from ..compress.sparsify import sparsify_run

    if method == "distill":
        return lambda stop: distill_run(
            run, out, student=options["student"], temperature=float(options["temperature"]),
            alpha=float(options["alpha"]), epochs=int(options["epochs"]),
            alone=bool(options["alone"]), stop=stop,
        )  # fmt: skip
    if method == "prune":
        return lambda stop: prune_run(
            run, out, ratio=float(ratio), importance=importance, global_pruning=bool(global_pruning),
            finetune_epochs=int(epochs), stop=stop,
        )  # fmt: skip
    if method == "sparsify":
        return lambda stop: sparsify_run(
            run, out, amount=float(ratio), global_pruning=bool(global_pruning),
            should_stop=stop.is_set,
        )  # fmt: skip
    return lambda stop: quantize_run(
        run, out, to=options["to"], calibration=int(calibration), should_stop=stop.is_set
    )


def family_view(ctx: Context, ws_id, run_name):
    """The run and its variants: (table rows, chart, the variants to pick from)."""
    if not run_name:
        return [], None, gr.update(choices=[], value=None)
    load_engine()
    from ..compress.report import comparison, descendants, in_pytorch, pareto_front
    from ..inspection.charts import compression_tradeoff

    ws = ctx.workspace(ws_id)
    variants = descendants(ws.runs_dir, ws.resolve_run(run_name).name)
    if not variants:
        return [], None, gr.update(choices=[], value=None)
    rows = comparison(variants)
    front = pareto_front(rows)
    table = [
        [r["run"] + (" · in PyTorch" if in_pytorch(r) else ""), r["method"],
         round(r["accuracy"], 3), round(r["macro_f1"], 3),
         round(r["params"] / 1e6, 2), round(r["macs"] / 1e6), round(r["size_bytes"] / 1e6, 1),
         round((r["zipped_bytes"] or 0) / 1e6, 1),
         f"{r['batch1_ms']:.1f} ± {r['batch1_spread_ms'] / 2:.1f}", round(r["batch32_ms"]),
         "✅" if best else "",
         "" if r.get("alone_accuracy") is None else round(r["alone_accuracy"], 3)]
        for r, best in zip(rows, front)
    ]  # fmt: skip
    names = [p.name for p in variants]
    return table, compression_tradeoff(rows, front), gr.update(choices=names, value=names[-1])


def _status(snap, method: str) -> str:
    return job_status(snap, STATUS_WHILE_TRAINING.get(method, ""))


def make_variant(
    ctx: Context, ws_id, run_name, method, ratio, importance, glob, epochs, calib, to,
    student, temperature, alpha, student_epochs, alone,
):  # fmt: skip
    """Start the variant as a job (one per workspace) and stream its progress until it ends:
    (status, training curves, table, chart, variants)."""
    try:
        if not run_name:
            raise StudioError("train a model first, then pick it here")
        ws = ctx.workspace(ws_id)
        run = ws.resolve_run(run_name)
    except StudioError as exc:
        raise gr.Error(as_text(exc), print_exception=False) from None
    options = dict(student=student, temperature=temperature, alpha=alpha,
                   epochs=student_epochs, alone=alone, to=to or "int8")  # fmt: skip
    out = variant_dir(ws, run.name, folder_suffix(method, student or "", to or "int8"))
    planned = {"prune": int(epochs), "distill": int(student_epochs)}.get(method, 0)
    job = start_job(ctx, ws_id, KIND, lambda: _stream(run, out, method, ratio, importance, glob,
                                                      epochs, calib, options), planned)  # fmt: skip
    name = "student" if method == "distill" else "recovery"
    snap = yield from follow_job(job, lambda s: _status(s, method), name, 3)
    yield _status(snap, method), gr.update(), *family_view(ctx, ws_id, run_name)


def stop_variant(ctx: Context, ws_id) -> str:
    return stop_job(ctx, ws_id, KIND)


def open_in_export(ctx: Context, ws_id, variant):
    """The picked variant, chosen on the Export tab (it is also in every other tab's list)."""
    if not variant:
        raise StudioError("make a variant first, then pick it")
    choices = run_choices(ctx.workspace(ws_id))
    ctx.choose_run(ws_id, "export-run", variant)  # the Export tab's refresh on opening keeps it
    return gr.Tabs(selected="export"), gr.update(choices=choices, value=variant)


def number_formats() -> dict:
    """The number formats this computer can make (bfloat16 only where its processor computes
    it natively: elsewhere it would be slower, and the engine refuses it)."""
    load_engine()
    from ..compress.quantize import formats_here

    here = formats_here()
    return gr.update(choices=[(label, to) for label, to in NUMBER_FORMATS if to in here])


def show_settings(method: str) -> tuple:
    """Only the chosen method's settings: (pruning settings, number format and calibration,
    sparsity note, distillation settings, the students to choose from)."""
    students = gr.update()
    if method == "distill":  # the catalog backbones whose weights are on this computer
        from ..models.backbones import catalog

        offline = [(r["title"], r["name"]) for r in catalog() if r["pretrained_available"]]
        students = gr.update(choices=offline, value=offline[0][1] if offline else None)
    return (
        gr.update(visible=method in ("prune", "sparsify")),
        gr.update(visible=method == "quantize"),
        gr.update(visible=method == "sparsify"),
        gr.update(visible=method == "distill"),
        students,
    )


def _settings() -> dict:
    c = {"method": gr.Radio(METHODS, value="quantize", label="How", elem_id="compress-method")}
    with gr.Accordion("Pruning settings", open=True, visible=False) as c["prune_box"], gr.Row():
        c["ratio"] = gr.Slider(0.1, 0.9, value=0.3, step=0.05, label="Share to remove or zero",
                               elem_id="compress-ratio")  # fmt: skip
        c["importance"] = gr.Dropdown(IMPORTANCES, value="magnitude",
                                      label="Which channels matter least, by")  # fmt: skip
        c["global"] = gr.Checkbox(label="Across the whole network (else the same share of "
                                  "every layer)", value=False)  # fmt: skip
        c["epochs"] = gr.Slider(0, 10, value=2, step=1, label="Recovery epochs (channels)",
                                elem_id="compress-epochs")  # fmt: skip
    with gr.Accordion("Distillation settings", open=True, visible=False) as c["teach_box"]:
        with gr.Row():
            c["student"] = gr.Dropdown([], label="Student (a network with weights on this "
                                       "computer)", elem_id="compress-student")  # fmt: skip
            c["student_epochs"] = gr.Slider(1, 30, value=5, step=1, label="Student epochs",
                                            elem_id="compress-student-epochs")  # fmt: skip
        with gr.Row():
            c["temperature"] = gr.Slider(1, 10, value=4, step=0.5, label="Temperature (how "
                                         "much the teacher's doubts are shown)")  # fmt: skip
            c["alpha"] = gr.Slider(0, 1, value=0.7, step=0.05, label="Teacher's share of the "
                                   "lesson (the rest: the labels)")  # fmt: skip
            c["alone"] = gr.Checkbox(value=True, label="Also train the student alone, to "
                                     "compare (twice the time)")  # fmt: skip
    with gr.Row() as c["quant_box"]:
        c["to"] = gr.Dropdown(NUMBER_FORMATS, value="int8", label="Number format",
                              elem_id="compress-to")  # fmt: skip
        c["calibration"] = gr.Slider(8, 256, value=64, step=8,
                                     label="Pictures to calibrate int8 on")  # fmt: skip
    c["sparsity_note"] = gr.Markdown(SPARSITY_NOTE, visible=False, elem_id="compress-sparsity")
    return c


def _results() -> dict:
    c = {"status": gr.Markdown(elem_id="compress-status")}
    c["curves"] = gr.Plot(label="Training (pruning's recovery, or the student)",
                          elem_id="compress-curves")  # fmt: skip
    c["table"] = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="compress-table",
                              label="The model and its variants (timed on this computer)")  # fmt: skip
    c["chart"] = gr.Plot(label="Accuracy against speed", elem_id="compress-chart")
    with gr.Row():
        c["variant"] = gr.Dropdown(choices=[], label="Pick a variant", elem_id="compress-variant",
                                   scale=3)  # fmt: skip
        c["export"] = gr.Button("Export this variant", elem_id="compress-export", scale=1)
    return c


def build_compress_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    gr.Markdown(HELP)
    run, refresh_run = run_picker(ctx, ws_state, "Which trained model to shrink.", "compress-run")
    c = _settings()
    with gr.Row():
        go = gr.Button("Make the variant", variant="primary", elem_id="compress-go")
        stop = gr.Button("Stop", variant="stop", elem_id="compress-stop")
    r = _results()
    bind = functools.partial
    view = friendly(bind(family_view, ctx))
    family = [r["table"], r["chart"], r["variant"]]
    settings = [c[k] for k in ("method", "ratio", "importance", "global", "epochs", "calibration",
                               "to", "student", "temperature", "alpha", "student_epochs",
                               "alone")]  # fmt: skip
    go.click(bind(make_variant, ctx), [ws_state, run, *settings],
             [r["status"], r["curves"], *family], concurrency_limit=None,
             show_progress="hidden")  # fmt: skip
    stop.click(bind(stop_variant, ctx), ws_state, None, concurrency_limit=None)
    run.change(view, [ws_state, run], family)
    run.change(friendly(number_formats), None, c["to"])
    shown = [c[k] for k in ("prune_box", "quant_box", "sparsity_note", "teach_box", "student")]
    c["method"].change(friendly(show_settings), c["method"], shown)

    def wire(tabs: gr.Tabs, built: dict) -> None:
        """'Export this variant' opens the Export tab with the variant chosen."""
        export_run = built["export"].exposes["run"]
        r["export"].click(
            friendly(bind(open_in_export, ctx)), [ws_state, r["variant"]], [tabs, export_run]
        )

    return TabParts([run], refresh_run, exposes={"run": run}, wire=wire)
