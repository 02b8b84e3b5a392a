"""The Transfer Studio app: tabs from pictures to a model file, on the engine.

    studio app [--host 127.0.0.1] [--port 7860] [--share] [--workspace DIR]

Each browser keeps its own workspace (an id stored in the browser), so several people can use
one app at once and a restarted app still shows a person's classes and earlier runs. Only files
inside the workspace folder are ever served.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import gradio as gr

from .common import Context
from .data_tab import build_data_tab
from .evaluate_tab import build_evaluate_tab
from .explain_tab import build_explain_tab
from .export_tab import build_export_tab
from .model_tab import build_model_tab
from .predict_tab import build_predict_tab
from .train_tab import build_train_tab

__all__ = ["build_app", "main", "MAX_UPLOAD"]

MAX_UPLOAD = "200mb"
INTRO = """# Transfer Studio
Teach the computer to recognise your own pictures. **Start with the Data tab**: add pictures (or
load the example), then go through the tabs from left to right."""


def build_app(workspace_base: str | Path) -> gr.Blocks:
    """The whole app; ``workspace_base`` holds one folder per browser."""
    ctx = Context(Path(workspace_base))
    with gr.Blocks(title="Transfer Studio") as demo:
        browser_id = gr.BrowserState(
            None, storage_key="transfer-studio-workspace", secret=ctx.browser_secret()
        )
        ws_state = gr.State(None)
        gr.Markdown(INTRO)
        with gr.Tabs() as tabs:
            with gr.Tab("1 · Data", id="data"):
                data = build_data_tab(ctx, ws_state)
            with gr.Tab("2 · Model", id="model") as model_tab:
                model = build_model_tab(ctx, ws_state, model_tab)
            with gr.Tab("3 · Train", id="train") as train_tab:
                training = build_train_tab(ctx, ws_state, model["backbone"], model["freeze"])
            with gr.Tab("4 · Evaluate", id="evaluate") as evaluate_tab:
                evaluate = build_evaluate_tab(ctx, ws_state)
            with gr.Tab("5 · Explain", id="explain") as explain_tab:
                explained = build_explain_tab(ctx, ws_state)
            with gr.Tab("6 · Predict", id="predict") as predict_tab:
                predict = build_predict_tab(ctx, ws_state)
            with gr.Tab("7 · Export", id="export") as export_tab:
                export = build_export_tab(ctx, ws_state)

        def open_workspace(saved_key):
            key, ws = ctx.open(saved_key)
            ctx.warm_up()
            ready = "Your workspace is ready." + (
                " Your earlier pictures and runs are here." if saved_key == key else ""
            )
            return (
                key,  # the browser keeps its key; the folder id stays on the server
                ws.id,
                ready,
                *data["refresh"](ws.id),
                *training["refresh"](ws.id),
                evaluate["refresh"](ws.id),
                explained["refresh"](ws.id),
                predict["refresh"](ws.id),
                export["refresh"](ws.id),
            )

        demo.load(
            open_workspace,
            browser_id,
            [
                browser_id,
                ws_state,
                data["status"],
                *data["views"],
                *training["views"],
                *evaluate["views"],
                *explained["views"],
                *predict["views"],
                *export["views"],
            ],
            # Only the page itself opens a workspace: not offered to API clients (and a client
            # that calls it anyway needs the browser's key: an id opens nothing).
            api_visibility="private",
        )
        # The catalog needs torch and timm on the first start: it fills in separately, without
        # holding up the rest (later starts read it from disk).
        demo.load(model["refresh"], None, model["views"])
        # Lists of runs are re-read whenever their tab is opened.
        train_tab.select(training["refresh"], ws_state, training["views"])
        explained["wire_top_losses"](tabs, evaluate["losses"], evaluate["run"])
        explained["wire_predict"](tabs, predict["explain_button"], predict["image"], predict["run"])
        tabs_and_parts = (
            (evaluate_tab, evaluate),
            (explain_tab, explained),
            (predict_tab, predict),
            (export_tab, export),
        )
        for tab, part in tabs_and_parts:
            tab.select(part["refresh"], part.get("refresh_inputs", ws_state), part["views"])
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="studio app", description="Start the Transfer Studio app."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this computer only)"
    )
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--share", action="store_true", help="also make a temporary public link (needs internet)"
    )
    parser.add_argument(
        "--open-browser", action="store_true", help="open the app in the default web browser"
    )
    parser.add_argument(
        "--max-trainings",
        type=int,
        default=None,
        help="trainings that run at once; the others wait in line (default: one per two cores)",
    )
    parser.add_argument(
        "--workspace",
        default="workspace",
        help="folder for everyone's pictures and runs (default: ./workspace)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # The terminal is for the person running the app: no line per HTTP request, no ONNX
    # optimiser chatter during an export (warnings and errors still show).
    for noisy in ("httpx", "httpcore", "onnxscript", "onnx_ir", "torch.onnx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    base = Path(args.workspace).resolve()
    if args.max_trainings:  # read by studio.jobs when the first job starts
        os.environ["STUDIO_MAX_TRAININGS"] = str(max(1, args.max_trainings))
    demo = build_app(base)
    private = base / ".private"
    # Nothing is served by its path: Gradio accepts files that handlers return from its working
    # folder and hands each page a copy under an unguessable address, while the file route serves
    # only allowed_paths (none). So the app works from inside the workspace base folder, and one
    # person's pictures can never be fetched by another who learns their folder's name.
    if os.environ.get("STUDIO_CACHE"):  # a relative cache folder must not move with the chdir
        os.environ["STUDIO_CACHE"] = os.path.abspath(os.environ["STUDIO_CACHE"])
    os.chdir(base)
    where = "this computer only" if args.host in ("127.0.0.1", "localhost") else "the network"
    print(f"Transfer Studio: http://{args.host}:{args.port} (open to {where}; Ctrl-C stops it)")
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=MAX_UPLOAD,
        blocked_paths=[str(private)],
        inbrowser=args.open_browser,
        footer_links=[],
        theme=gr.themes.Soft(),
        show_error=False,
        quiet=not args.share,  # Gradio's own lines (a share-link hint offline apps cannot use)
    )
    return 0
