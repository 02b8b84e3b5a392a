"""Export tab: one zip with the model in every format, checked, plus how to use it."""

from __future__ import annotations

import functools

import gradio as gr

from ..runs import run_tasks
from .common import Context, friendly, load_engine, run_picker
from .tabs import TabParts

HELP = """### 9. Take your model with you
**Build the download** makes a zip with your model as `model.safetensors` (for Python), ONNX (for
phones, web pages, C#, Java), `model.pt2` (PyTorch's `torch.export`) and TorchScript (older C++
apps), plus the class names, the picture preparation and a model card describing it. Each file is
checked the way you will use it: the zip is unpacked into an empty folder and the code shown below
is run on it, on your own pictures, and must give the same answers as the app."""


def build_download(ctx: Context, ws_id, name, progress=gr.Progress()):
    """The zip of every format, checked as received: (what was checked, the zip's path)."""
    load_engine()
    from ..deployment.package import build_package

    folder = ctx.workspace(ws_id).resolve_run(name or "")
    package = build_package(folder, progress=lambda f, text: progress(f, desc=text))
    return package.summary(), str(package.zip_path)


def code_for_run(ctx: Context, ws_id, name) -> list[str]:
    """The code shown for each format, for the chosen run: a multi-task run's prints every
    task's answer from the graph's named outputs."""
    from ..deployment.samples import usage_code

    multitask = bool(name) and bool(run_tasks(ctx.workspace(ws_id).resolve_run(name)))
    return [usage_code(fmt, multitask) for fmt in FORMAT_TITLES]


def build_export_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    from ..deployment.samples import usage_code  # plain text: no torch import at start-up

    gr.Markdown(HELP)
    run, refresh = run_picker(ctx, ws_state, "Which trained model to export.", "export-run")
    build = gr.Button("Build the download", variant="primary", elem_id="build-export")
    checks = gr.Markdown(elem_id="export-checks")
    download = gr.File(label="Your model (zip)", elem_id="export-zip")
    gr.Markdown("#### How to use the file (unzip it, put a `photo.jpg` beside the files, run this)")
    codes = []
    with gr.Tabs():
        for fmt, title in FORMAT_TITLES.items():
            with gr.Tab(title):
                codes.append(gr.Code(usage_code(fmt), language="python", interactive=False,
                                     elem_id=f"export-code-{fmt}"))  # fmt: skip

    make = friendly(functools.partial(build_download, ctx))
    build.click(make, [ws_state, run], [checks, download], api_name="export")
    run.change(friendly(functools.partial(code_for_run, ctx)), [ws_state, run], codes)

    return TabParts([run], refresh, exposes={"run": run})


FORMAT_TITLES = {
    "onnx": "ONNX (any language)",
    "safetensors": "Python + timm",
    "pt2": "PyTorch (pt2)",
    "torchscript": "TorchScript",
}
