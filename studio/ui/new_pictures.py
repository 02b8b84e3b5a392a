"""The Data tab's second set: new pictures, kept apart from the training classes.

New pictures (from another camera, place or season) are compared with the training pictures on
the Domain tab and never trained on as labelled pictures. Here they come in (files, a zip whose
class folders are labels, the webcam) and get the same report as the training pictures: what
could not be used, duplicates, and, the one that matters most for a comparison, new pictures
that are copies of training pictures. The Domain tab's quick upload calls the same handlers.
"""

from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr

from ..errors import StudioError
from .common import Context, as_text, friendly
from .pager import bind_pager, build_pager, page_of

__all__ = ["add_new", "remove_new", "new_pictures_status", "build_new_pictures"]

HELP = """Pictures from somewhere else (another camera, another place, another season) to compare
with your training pictures on tab **8 · Domain**. They are kept apart: a label given here only
*measures* the model, it never trains it. Give a label when you know what the pictures show;
leave **no label** when you do not."""
NO_LABEL = ""
COPY_HEADERS = ["new picture", "training picture", "how alike"]
SKIP_HEADERS = ["file", "why it was skipped"]


def new_pictures_status(ctx: Context, ws_id) -> str:
    count, labels = ctx.workspace(ws_id).new_pictures()
    if not count:
        return "No new pictures yet."
    how = f"labelled {', '.join(labels)}" if labels else "unlabelled"
    return f"**{count} new pictures** ({how})."


def add_new(ctx: Context, ws_id, paths, label: str | None = None) -> str:
    """Add uploaded pictures or zips to the new pictures; says what came in and what did not."""
    if not paths:
        raise StudioError("choose some pictures or a zip first")
    report = ctx.workspace(ws_id).add_new_pictures(paths, label or None)
    text = new_pictures_status(ctx, ws_id) + f" Added {report.added}."
    if report.skipped:
        names = "; ".join(f"{name} ({why})" for name, why in report.skipped[:5])
        more = f" and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else ""
        text += as_text(f" Skipped {len(report.skipped)}: {names}{more}")  # names from uploads
    return text


def remove_new(ctx: Context, ws_id, sure: bool) -> str:
    """Delete the new pictures, only once the person ticked that they are sure."""
    if not sure:
        raise StudioError("tick 'yes, remove them' first: nothing is deleted without asking")
    count = ctx.workspace(ws_id).remove_new_pictures()
    return f"Removed {count} new pictures. " + new_pictures_status(ctx, ws_id)


def add_snapshot(ctx: Context, ws_id, label, image) -> str:
    if image is None:
        raise StudioError("take a photo first")
    ctx.workspace(ws_id).add_new_pil(image, label or None)
    return "Added a photo to the new pictures. " + new_pictures_status(ctx, ws_id)


def _short(path: str, root: Path) -> str:
    """``class/file`` (or ``file``) for a table: the folders above mean nothing to a person."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name


def views(ctx: Context, ws_id):
    """(label chooser, report, the gallery's first page, its number, where it is, copies of
    training pictures, skipped files); nothing changes before the page has opened its
    workspace (the first tab's select comes first)."""
    if not ws_id:
        return (gr.update(),) * 7
    ws = ctx.workspace(ws_id)
    labels = gr.update(choices=[("no label", NO_LABEL)] + [(c, c) for c in ws.classes()])
    report = ws.new_pictures_report()
    if not report.count and not report.skipped:
        return labels, "No new pictures yet.", [], 1, "", [], []
    lines = [as_text(line) for line in report.lines()]  # labels come from uploads: text only
    text = "\n".join(["**New pictures:** " + lines[0], ""] + [f"- {line}" for line in lines[1:]])
    copies = [[_short(new, ws.new_dir), _short(old, ws.data_dir), kind]
              for new, old, kind in report.copies]  # fmt: skip
    skipped = [[_short(p, ws.new_dir), why] for p, why in report.skipped]
    return labels, text, *new_page(ctx, ws_id), copies, skipped


def new_page(ctx: Context, ws_id, page=1) -> tuple[list, int, str]:
    """A page of the new pictures for the gallery, its number and where it is."""
    folder = ctx.workspace(ws_id).new_dir
    pictures = sorted(f for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []
    shown, number, where = page_of(pictures, page)
    return [(str(p), _short(str(p), folder)) for p in shown], number, where


def build_new_pictures(ctx: Context, ws_state: gr.State, tab: gr.Tab) -> tuple[list, object]:
    """The new pictures' panel, refreshed whenever the tab is opened (the Domain tab adds
    pictures too) and after each change made here. Returns its views and their refresh, for
    the Data tab to refresh them too when the training pictures change (the report compares
    the two sets, and the labels offered are the training classes)."""
    with gr.Accordion("New pictures, kept apart from training", open=False, elem_id="data-new"):
        gr.Markdown(HELP)
        with gr.Row():
            with gr.Column(scale=1):
                label = gr.Dropdown(label="Label for the pictures added now", value=NO_LABEL,
                                    choices=[("no label", NO_LABEL)], elem_id="data-new-label")  # fmt: skip
                files = gr.File(label="New pictures (pictures or a zip of class folders)",
                                file_count="multiple", height=120, elem_id="data-new-files")  # fmt: skip
                webcam = gr.Image(label="Or take a photo", sources=["webcam"], type="pil",
                                  height=180, elem_id="data-new-webcam")  # fmt: skip
                snap = gr.Button("Add photo to the new pictures", elem_id="data-new-snap")
                sure = gr.Checkbox(label="yes, remove them", value=False, elem_id="data-new-sure")
                remove = gr.Button("Remove the new pictures", size="sm", elem_id="data-new-remove")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="data-new-status")
                report = gr.Markdown("No new pictures yet.", elem_id="data-new-report")
                pager = build_pager("data-new-gallery", label="New pictures", columns=6,
                                    height=220)  # fmt: skip
                copies = gr.Dataframe(headers=COPY_HEADERS, interactive=False, wrap=True,
                                      label="New pictures that are copies of training pictures",
                                      elem_id="data-new-copies")  # fmt: skip
                skipped = gr.Dataframe(headers=SKIP_HEADERS, interactive=False, wrap=True,
                                       label="Skipped files", elem_id="data-new-skipped")  # fmt: skip
    shown = [label, report, *pager.outputs, copies, skipped]
    show = friendly(functools.partial(views, ctx))
    bind_pager(pager, friendly(functools.partial(new_page, ctx)), [ws_state])

    def on(event, handler, inputs):
        bound = friendly(functools.partial(handler, ctx))
        return event(bound, [ws_state, *inputs], status).success(show, ws_state, shown)

    on(files.upload, add_new, [files, label])
    on(snap.click, add_snapshot, [label, webcam])
    # The tick is cleared only after a removal (a refused one leaves the box free to tick).
    on(remove.click, remove_new, [sure]).success(lambda: False, None, sure)
    tab.select(show, ws_state, shown)
    return shown, show
