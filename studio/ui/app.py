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
from .compress_tab import build_compress_tab
from .data_tab import build_data_tab
from .domain_tab import build_domain_tab
from .evaluate_tab import build_evaluate_tab
from .explain_tab import build_explain_tab
from .export_tab import build_export_tab
from .model_tab import build_model_tab
from .predict_tab import build_predict_tab
from .tabs import TabParts, TabSpec, as_values
from .train_tab import build_train_tab

__all__ = ["build_app", "main", "MAX_UPLOAD", "TABS"]

MAX_UPLOAD = "200mb"
INTRO = """# Transfer Studio
Teach the computer to recognise your own pictures. **Start with the Data tab**: add pictures (or
load the example), then go through the tabs from left to right."""

# The tabs, left to right (the contract they follow: studio.ui.tabs).
TABS = [
    TabSpec("1 · Data", "data", build_data_tab),
    TabSpec("2 · Model", "model", build_model_tab),
    TabSpec("3 · Train", "train", build_train_tab),
    TabSpec("4 · Evaluate", "evaluate", build_evaluate_tab),
    TabSpec("5 · Explain", "explain", build_explain_tab),
    TabSpec("6 · Predict", "predict", build_predict_tab),
    TabSpec("7 · Compress", "compress", build_compress_tab),
    TabSpec("8 · Domain", "domain", build_domain_tab),
    TabSpec("9 · Export", "export", build_export_tab),
]


def build_app(workspace_base: str | Path) -> gr.Blocks:
    """The whole app; ``workspace_base`` holds one folder per browser."""
    ctx = Context(Path(workspace_base))
    with gr.Blocks(title="Transfer Studio") as demo:
        browser_id = gr.BrowserState(
            None, storage_key="transfer-studio-workspace", secret=ctx.browser_secret()
        )
        ws_state = gr.State(None)
        gr.Markdown(INTRO)
        built: dict[str, TabParts] = {}
        selects: dict[str, gr.Tab] = {}
        with gr.Tabs() as tabs:
            for spec in TABS:
                with gr.Tab(spec.title, id=spec.id) as tab:
                    built[spec.id] = spec.build(ctx, ws_state, tab, built)
                selects[spec.id] = tab
        _refresh_on_open(demo, ctx, browser_id, ws_state, built)
        for name, parts in built.items():
            inputs = [ws_state] if parts.refresh_inputs is None else parts.refresh_inputs
            if parts.on_load:
                demo.load(parts.refresh, inputs, parts.views)
            if parts.on_select:
                selects[name].select(parts.refresh, inputs, parts.views)
            if parts.wire is not None:
                parts.wire(tabs, built)
    return demo


def _refresh_on_open(demo, ctx: Context, browser_id, ws_state, built) -> None:
    """When a page opens: find the browser's workspace and fill every tab that shows it. The
    greeting goes to the first tab that exposes a ``status`` line (the Data tab, where a person
    starts)."""
    opening = [parts for parts in built.values() if parts.on_open and parts.refresh]
    status = next(p.exposes["status"] for p in built.values() if "status" in p.exposes)

    def open_workspace(saved_key):
        key, ws = ctx.open(saved_key)
        ctx.warm_up()
        ready = "Your workspace is ready." + (
            " Your earlier pictures and runs are here." if saved_key == key else ""
        )
        values = [v for p in opening for v in as_values(p.refresh(ws.id), p.views)]
        # The browser keeps its key; the folder id stays on the server.
        return (key, ws.id, ready, *values)

    demo.load(
        open_workspace,
        browser_id,
        [browser_id, ws_state, status, *(view for p in opening for view in p.views)],
        # Only the page itself opens a workspace: not offered to API clients (and a client
        # that calls it anyway needs the browser's key: an id opens nothing).
        api_visibility="private",
    )


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
