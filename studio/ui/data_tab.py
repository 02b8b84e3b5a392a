"""Data tab: classes and pictures in, the data report out."""

from __future__ import annotations

import functools

import gradio as gr

from ..data.tasks import kind_words
from ..errors import StudioError
from ..inspection import charts
from .common import Context, as_text, friendly
from .new_pictures import build_new_pictures
from .pager import bind_pager, build_pager, page_of
from .tabs import TabParts

HELP = """### 1. Your pictures
Make one **class** for each kind of thing the computer should tell apart (for example *apples*
and *pears*), then add pictures to each: upload files, take photos with the webcam, or upload a
`.zip` with one folder per class. No pictures of your own yet? Press **Load example dataset**: it
goes beside your own pictures, never instead of them, and **Pictures to work on** switches
between the two. 20 or more pictures per class work best.

**Several questions per picture** (what is it made of *and* what colour is it)? Upload a `.zip`
holding the pictures and a `labels.csv` with a `path` column and one column per question
(`path,material,colour`): each column becomes a task, and one model learns them all. **Load
the multi-task example** shows how."""


def _sets_update(ws):
    """The picture-set chooser, each set named with its number of pictures."""
    choices = [(f"{name} ({count})", key) for key, name, count in ws.picture_sets()]
    return gr.update(choices=choices, value=ws.active)


def _views(ctx: Context, ws_id: str, selected: str | None = None):
    """Everything the tab shows, recomputed from disk."""
    ws = ctx.workspace(ws_id)
    return (_sets_update(ws), *_set_views(ws, selected))


def _dataset_or_problem(ws):
    """The workspace's dataset, loaded once per refresh, or why it is not ready (a sentence)."""
    try:
        return ws.dataset(), None
    except StudioError as exc:
        return None, str(exc)


def _set_views(ws, selected: str | None):
    classes = ws.classes()
    shown = classes
    counts = ws.counts()
    dataset, problem = _dataset_or_problem(ws)
    if ws.is_table:  # a table's classes are its tasks' values, known once it is read
        shown = dataset.classes if dataset is not None else []
    pick = selected if selected in classes else (classes[0] if classes else None)
    seen = selected if selected in shown else (shown[0] if shown else None)
    class_update = gr.update(choices=classes, value=pick)
    show_update = gr.update(choices=shown, value=seen)
    gallery = _class_page(ws, seen, 1)  # the gallery, its page number, where the page is
    refused = [[name, f"refused on upload: {why}"] for name, why in ws.refused()]
    if sum(counts.values()) == 0:
        empty = charts.class_counts({})
        return class_update, show_update, empty, "No pictures yet.", *gallery, refused
    if dataset is None:
        figure = charts.class_counts({"pictures": counts})
        report = f"**Not ready to train:** {problem}"
        return class_update, show_update, figure, report, *gallery, refused
    report = dataset.report
    lines = [
        f"**{report.total} pictures in {len(report.classes)} classes**, split into "
        + ", ".join(f"{n} {split}" for split, n in report.images.items())
        + "."
    ]
    if report.tasks:
        lines[0] = lines[0].replace(
            f"in {len(report.classes)} classes", f"with {len(report.tasks)} tasks"
        )
        lines += ["", "**Tasks** (one per column of `labels.csv`; one model answers them all):"]
        lines += [
            f"- column `{t['name']}`: "
            + kind_words(t["multilabel"])
            + f": {', '.join(t['labels'])}"
            for t in report.tasks
        ]
    if report.warnings:
        lines += ["", "**Worth knowing:**"] + [f"- {w}" for w in report.warnings]
    if report.exact_duplicates:
        lines.append(
            f"- {len(report.exact_duplicates)} group(s) of identical pictures "
            "(kept together in one split)"
        )
    if report.near_duplicates:
        lines.append(
            f"- {len(report.near_duplicates)} group(s) of very similar pictures "
            "(kept together in one split)"
        )
    skipped = refused + [[s.path.rsplit("/", 1)[-1], s.reason] for s in report.skipped]
    if skipped:
        lines.append(f"- {len(skipped)} file(s) could not be used; they are listed below")
    return (
        class_update,
        show_update,
        charts.class_counts(report.counts),
        "\n".join(lines),
        *gallery,
        skipped,
    )


def load_example(ctx: Context, ws_id):
    """The example goes beside the person's own pictures and becomes the set worked on."""
    report = ctx.workspace(ws_id).load_example()
    return (
        f"Working on the example ({as_text(report.message())}); your own pictures are kept: "
        "choose **Your pictures** above to go back to them.",
        *_views(ctx, ws_id),
    )


def load_multitask_example(ctx: Context, ws_id):
    """The multi-task example (a table: path,material,colour) becomes the set worked on."""
    report = ctx.workspace(ws_id).load_multitask_example()
    return (
        f"Working on the multi-task example ({as_text(report.message())}): each picture has "
        "a **material** and a **colour**; one model will learn both. Your other pictures are "
        "kept.",
        *_views(ctx, ws_id),
    )


def empty_table(ctx: Context, ws_id, sure: bool):
    """Remove the table set's pictures and table, only once the person has ticked the box."""
    if not sure:
        raise StudioError("tick the box first: this removes the table and its pictures")
    removed = ctx.workspace(ws_id).empty_table()
    return (f"Removed the table and its {removed} file(s).", *_views(ctx, ws_id))


def choose_set(ctx: Context, ws_id, key):
    ws = ctx.workspace(ws_id)
    if key and key != ws.active:
        ws.use(key)
    return ("", *_views(ctx, ws_id))


def upload_zip(ctx: Context, ws_id, path, progress=gr.Progress()):
    """Add a zip's class folders; a zip of thousands of pictures shows how far the check is."""
    if not path:
        return (gr.update(), *_views(ctx, ws_id))

    def checked(done: int, total: int) -> None:
        if done == total or done % 50 == 0:  # a few hundred updates at most, not one a picture
            progress(done / total, desc=f"checking pictures: {done:,} of {total:,}")

    report = ctx.workspace(ws_id).import_zip(path, progress=checked)
    if report.skipped:
        gr.Warning(f"{len(report.skipped)} file(s) in the zip were skipped; see the list.")
    return (as_text(report.message()) + ".", *_views(ctx, ws_id))


def add_class(ctx: Context, ws_id, name):
    made = ctx.workspace(ws_id).add_class(name)
    return (f"Added class **{made}**. Now add pictures to it.", *_views(ctx, ws_id, made))


def add_pictures(ctx: Context, ws_id, cls, paths):
    if not cls:
        raise StudioError("make or choose a class first")
    if not paths:
        raise StudioError("choose some pictures first")
    report = ctx.workspace(ws_id).add_images(cls, paths)
    if report.skipped:
        gr.Warning(f"{len(report.skipped)} file(s) were not pictures and were skipped.")
    return (as_text(report.message()) + ".", *_views(ctx, ws_id, cls))


def add_snapshot(ctx: Context, ws_id, cls, image):
    if not cls:
        raise StudioError("make or choose a class first")
    if image is None:
        raise StudioError("take a photo first")
    ctx.workspace(ws_id).add_pil(cls, image)
    return (f"Added a photo to **{cls}**.", *_views(ctx, ws_id, cls))


def rename(ctx: Context, ws_id, cls, new):
    made = ctx.workspace(ws_id).rename_class(cls or "", new)
    return (f"Renamed **{cls}** to **{made}**.", *_views(ctx, ws_id, made))


def delete(ctx: Context, ws_id, cls):
    ctx.workspace(ws_id).delete_class(cls or "")
    return (f"Deleted class **{cls}**.", *_views(ctx, ws_id))


def _class_page(ws, cls: str | None, page) -> tuple[list, int, str]:
    pictures = ws.images(cls) if cls else []
    shown, number, where = page_of(pictures, page)
    return [(str(p), p.name) for p in shown], number, where


def show_class(ctx: Context, ws_id, cls, page=1) -> tuple[list, int, str]:
    """A page of a class's pictures for the gallery, its number and where it is."""
    return _class_page(ctx.workspace(ws_id), cls, page)


def _add_pictures_column() -> dict:
    """Make classes, add pictures (files or webcam), rename or delete a class."""
    c = {}
    c["new_class"] = gr.Textbox(
        label="New class name",
        placeholder="e.g. apples",
        info="A short name for one kind of thing to recognise.",
    )
    c["add_class"] = gr.Button("Add class")
    c["target"] = gr.Dropdown(
        label="Class to add pictures to", choices=[], info="New pictures go into this class."
    )
    c["files"] = gr.File(
        label="Pictures",
        file_count="multiple",
        file_types=["image"],
        height=150,
        elem_id="data-files",
    )
    c["add"] = gr.Button("Add these pictures", variant="primary")
    c["webcam"] = gr.Image(
        label="Or take a photo", sources=["webcam"], type="pil", height=200, elem_id="webcam"
    )
    c["snap"] = gr.Button("Add photo to class", elem_id="data-snap")
    with gr.Accordion("Rename or delete a class", open=False):
        c["rename_to"] = gr.Textbox(
            label="New name for the selected class", info="Renames the class chosen above."
        )
        c["rename"] = gr.Button("Rename")
        c["delete"] = gr.Button("Delete class and its pictures", variant="stop")
    with gr.Accordion("Empty the table set (several tasks)", open=False):
        c["table_sure"] = gr.Checkbox(
            label="Yes, remove the table (labels.csv) and its pictures", value=False
        )
        c["empty_table"] = gr.Button("Empty the table set", variant="stop")
    return c


def _report_column() -> dict:
    """The report, the counts per class, a class's pictures and the skipped files."""
    c = {"report": gr.Markdown("No pictures yet.", elem_id="data-report")}
    c["counts"] = gr.Plot(label="Pictures per class")
    c["show_class"] = gr.Dropdown(
        label="Show pictures of", choices=[], info="Pick a class to see its pictures."
    )
    c["pager"] = build_pager(
        "data-gallery", label="Pictures", columns=6, height=300, allow_preview=True
    )
    c["skipped"] = gr.Dataframe(
        headers=["file", "why it was skipped"],
        label="Skipped files",
        interactive=False,
        elem_id="data-skipped",
        wrap=True,
    )
    return c


def build_data_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    gr.Markdown(HELP)
    with gr.Row():
        with gr.Column(scale=0, min_width=200):
            example_btn = gr.Button("Load example dataset", variant="primary")
            tasks_btn = gr.Button("Load the multi-task example", elem_id="load-multitask")
        picture_set = gr.Radio(
            label="Pictures to work on",
            choices=[],
            elem_id="picture-set",
            scale=0,
            min_width=260,
            info="Training uses these; the other set and its runs are kept.",
        )
        zip_file = gr.File(
            label="Upload a .zip (one folder per class, or pictures with a labels.csv)",
            elem_id="data-zip",
            file_types=[".zip"],
            scale=1,
        )
    status = gr.Markdown(elem_id="data-status")
    with gr.Row():
        with gr.Column(scale=1):
            a = _add_pictures_column()
        with gr.Column(scale=2):
            r = _report_column()
    new_views, show_new = build_new_pictures(ctx, ws_state, tab)
    # In the order _views returns them.
    views = [picture_set, a["target"], r["show_class"], r["counts"], r["report"]]
    views += [*r["pager"].outputs, r["skipped"]]
    outputs = [status, *views]

    def on(event, handler, inputs, **kw):
        bound = friendly(functools.partial(handler, ctx))
        event(bound, [ws_state, *inputs], outputs, **kw).then(show_new, ws_state, new_views)

    on(example_btn.click, load_example, [], api_name="load_example")
    on(tasks_btn.click, load_multitask_example, [], api_name="load_multitask_example")
    on(a["empty_table"].click, empty_table, [a["table_sure"]])
    on(picture_set.input, choose_set, [picture_set])
    on(zip_file.upload, upload_zip, [zip_file])
    on(a["add_class"].click, add_class, [a["new_class"]])
    on(a["new_class"].submit, add_class, [a["new_class"]])
    on(a["add"].click, add_pictures, [a["target"], a["files"]])
    on(a["snap"].click, add_snapshot, [a["target"], a["webcam"]])
    on(a["rename"].click, rename, [a["target"], a["rename_to"]])
    on(a["delete"].click, delete, [a["target"]])
    shown = friendly(functools.partial(show_class, ctx))
    r["show_class"].change(shown, [ws_state, r["show_class"]], r["pager"].outputs)
    bind_pager(r["pager"], shown, [ws_state, r["show_class"]])
    return TabParts(
        views=views + new_views,
        refresh=lambda ws_id: (*_views(ctx, ws_id), *show_new(ws_id)),
        on_select=False,  # what it shows changes only by its own buttons
        exposes={"status": status},
    )
