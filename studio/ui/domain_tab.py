"""Domain tab: are new pictures different from the ones the model learnt on, and where?"""

from __future__ import annotations

import functools
import html
from pathlib import Path

import gradio as gr

from ..errors import StudioError
from ..runs import CONFIG, can_resume_adaptation, load_json
from .common import (
    Context,
    as_text,
    follow_job,
    friendly,
    history_rows,
    job_status,
    load_engine,
    offer_runs,
    run_picker,
    start_job,
    stop_job,
)
from .new_pictures import add_new, new_pictures_status, remove_new
from .tabs import TabParts

HELP = """### 8. New pictures: has the world changed?
A model learns from the pictures it was given. When new pictures come from another camera,
another place or another season, it can quietly get worse. Add some new pictures here (files,
or a zip; class folders inside the zip are read as their labels; the Data tab takes them too,
with a label, from the webcam, and shows their report) and press **Measure the shift**: the studio compares them with the pictures the model learnt on, as the model sees
them, and says in one sentence whether they differ, and, if the new pictures are labelled with
the model's classes, whether that costs accuracy."""

ADAPT_HELP = """#### Teach the model the new pictures
Training again with your labelled pictures *and* the new ones (their labels are not used to
train): the model learns features that look alike on both. The result is a new model beside the
old one. When the new pictures are labelled, both models are measured on them. **Stop** keeps
the best epoch so far; **Continue it** goes on with a stopped one from where it stopped."""
METHODS = [
    ("Match the features' statistics (Deep CORAL)", "coral"),
    ("Match the features' distributions (DAN)", "dan"),
    ("Fool a judge that tells the sets apart (DANN)", "dann"),
    ("Count the training pictures that look like the new ones more", "reweight"),
]
RESULT_HEADERS = ["model", "accuracy on the new pictures", "MMD² training vs new", "run"]
PER_CLASS_HEADERS = ["class", "before", "adapted", "new pictures"]
KIND = "adaptation"
LIGHTS = {"green": "#54A24B", "amber": "#F2A93B", "red": "#E45756"}
# Gradio's Plot has no click event: this listens to Plotly's own on each drawn map (a new
# figure may be a new element, so it keeps looking for a while) and hands the point's index to
# the hidden box, whose change event shows the picture.
CLICK_JS = """() => {
  let tries = 0;
  const attach = () => {
    document.querySelectorAll('#domain-map .js-plotly-plot').forEach((gd) => {
      if (gd.dataset.studioClick || !gd.on) return;
      gd.dataset.studioClick = '1';
      gd.on('plotly_click', (ev) => {
        const point = ev.points && ev.points[0];
        const box = document.querySelector('#domain-picked textarea, #domain-picked input');
        if (!point || !point.customdata || !box) return;
        box.value = point.customdata[2] + ':' + Date.now();
        box.dispatchEvent(new Event('input', {bubbles: true}));
      });
    });
    if (++tries < 40) setTimeout(attach, 250);
  };
  attach();
}"""
STAT_HEADERS = ["what", "value", "what it means"]
CLASS_HEADERS = ["class", "MMD²", "p-value", "training pictures", "new pictures"]


def _light(result: dict) -> str:
    colour = LIGHTS[result["verdict"]]
    return (
        f'<div id="domain-verdict" data-verdict="{result["verdict"]}" style="display:flex;'
        f'gap:12px;align-items:center"><span style="width:28px;height:28px;border-radius:50%;'
        f'background:{colour};display:inline-block;flex:none"></span>'
        f"<span>{html.escape(result['sentence'])}</span></div>"
    )


def _stats(result: dict) -> list[list]:
    return [
        ["pictures compared", f"{result['n_source']} training, {result['n_target']} new",
         "the test needs about 30 in each to be trusted"],
        ["MMD²", f"{result['mmd']:.4f}", "0 when both sets look alike to the model"],
        ["p-value", f"{result['p_value']:.4f}",
         f"below 0.05: a difference chance alone rarely makes ({result['permutations']} "
         "shuffles)"],
        ["proxy A-distance", f"{result['a_distance']:.2f}",
         f"0: cannot be told apart, 2: always (told apart {result['domain_accuracy']:.0%})"],
        ["copies of training pictures", str(len(result["copies"])),
         "identical or near-identical pictures in both sets make them look more alike"],
    ]  # fmt: skip


def measure(ctx: Context, ws_id, run_name, map_method="pca", progress=gr.Progress()):
    """(traffic light, figures, per-class table, map, unlike gallery, typical gallery, the
    map's pictures in point order: kept on the server, a click sends only an index)."""
    if not run_name:
        raise StudioError("train a model first, then pick it here")
    ws = ctx.workspace(ws_id)
    if not ws.new_pictures()[0]:
        raise StudioError("add some new pictures first")
    load_engine()
    from ..domain.pictures import load_pictures
    from ..domain.shift import Embedder
    from ..domain.shift import measure_shift as measure_engine
    from ..inspection import charts
    from ..models.kinds import load_run

    run = ws.resolve_run(run_name)
    loaded = load_run(run)  # built once: its pictures' folder and its features
    source = load_pictures(loaded.config["data"], "the run's pictures")
    result = measure_engine(
        source, load_pictures(ws.new_dir, "new pictures"), Embedder.from_run(loaded), run_dir=run,
        permutations=500, progress=lambda f: progress(f, desc="looking at both sets"),
        map_method=map_method or "pca",
    )  # fmt: skip
    classes = [[name, round(r["mmd"], 4), round(r["p_value"], 4), r["n_source"], r["n_target"]]
               for name, r in result["per_class"].items()]  # fmt: skip
    m = result["map"]
    figure = charts.shift_map(m["points"], m["paths"], m["labels"], result["n_source"],
                              m["method"])  # fmt: skip
    target = result["typical"]["target"]
    gallery = lambda rows: [(r["path"], Path(r["path"]).name) for r in rows]  # noqa: E731
    return (_light(result), _stats(result), classes, figure,
            gallery(target["most_unlike_other"]), gallery(target["most_typical_of_other"]),
            m["paths"])  # fmt: skip


def show_point(paths: list[str], picked: str):
    """The picture behind a clicked point of the map (``picked`` is ``index:click time``)."""
    try:
        index = int(str(picked).split(":", 1)[0])
    except ValueError:
        return gr.update()
    if not paths or not 0 <= index < len(paths):
        return gr.update()
    path = Path(paths[index])
    return gr.update(value=str(path), label=f"{path.parent.name}/{path.name}")


def adapt(ctx: Context, ws_id, run_name, method, epochs):
    """Train the adapted model as a job and stream its progress: (status, curves, results, the
    results per class)."""
    from .compress_tab import variant_dir

    try:
        if not run_name:
            raise StudioError("train a model first, then pick it here")
        ws = ctx.workspace(ws_id)
        run = ws.resolve_run(run_name)
        count, labels = ws.new_pictures()
        if not count:
            raise StudioError("add some new pictures first")
    except StudioError as exc:
        raise gr.Error(as_text(exc), print_exception=False) from None
    out = variant_dir(ws, run.name, f"adapted-{method}")
    labelled = bool(labels) and not any(f.is_file() for f in ws.new_dir.iterdir())

    def stream():
        from ..domain.adapt import adapt_run

        return lambda stop: adapt_run(run, ws.new_dir, out, method, epochs=int(epochs),
                                      eval_dir=ws.new_dir if labelled else None, stop=stop)  # fmt: skip

    yield from _follow(ctx, ws_id, start_job(ctx, ws_id, KIND, stream, int(epochs)), out)


def _follow(ctx: Context, ws_id: str, job, out: Path, earlier: list[dict] | None = None):
    """(status, curves, results, per class, stopped adaptations, their button) while the
    adaptation into ``out`` runs (after ``earlier`` epochs, when continued), then its results."""
    snap = yield from follow_job(job, job_status, "adapted", 4, earlier)
    yield job_status(snap), gr.update(), *adaptation_results(out), *stopped_choices(ctx, ws_id)


def stopped_choices(ctx: Context, ws_id: str) -> tuple:
    """The stopped adaptations that can go on (newest first) and their button, shown only
    when there are any and no adaptation is running (the running one has a checkpoint too)."""
    job = ctx.jobs.get(ws_id, KIND)
    busy = job is not None and not job.done
    runs = [] if busy else ctx.workspace(ws_id).runs()
    return offer_runs([p.name for p in runs if can_resume_adaptation(p)])


def continue_adapting(ctx: Context, ws_id, name: str | None):
    """Go on with a stopped adaptation from its last finished epoch, with the run, new
    pictures and method it was started with; its curves show the epochs it had run too."""
    try:
        if not name:
            raise StudioError("there is no stopped adaptation to continue")
        out = ctx.workspace(ws_id).resolve_run(name)
        planned = int(load_json(out / CONFIG).get("epochs", 1))
    except (StudioError, OSError, ValueError, AttributeError) as exc:
        raise gr.Error(as_text(exc), print_exception=False) from None
    earlier = history_rows(out)

    def stream():
        from ..domain.adapt import resume_adaptation

        return lambda stop: resume_adaptation(out, stop)

    yield from _follow(ctx, ws_id, start_job(ctx, ws_id, KIND, stream, planned), out, earlier)


def adaptation_results(out: Path) -> tuple[list[list], list[list]]:
    """Source-only against adapted, as measured: overall, and per class when the new pictures
    are labelled (the share of each class's pictures recognised); nothing when the run kept no
    model."""
    from ..domain.adapt import ADAPTATION
    from ..runs import read_optional

    record = read_optional(out, ADAPTATION) if out.is_dir() else None
    if not record:
        return [], []
    rows = []
    for name, key, run in (("before (the model you trained)", "source_only", record["parent"]),
                           ("adapted", "adapted", out.name)):  # fmt: skip
        r = record[key]
        acc = "" if r.get("accuracy") is None else round(r["accuracy"], 3)
        rows.append([name, acc, round(r["mmd"], 4), run])
    before, after = (record[k].get("per_class") or {} for k in ("source_only", "adapted"))
    classes = [[c, round(before[c]["recall"], 3), round(after[c]["recall"], 3),
                after[c]["support"]] for c in after if c in before]  # fmt: skip
    return rows, classes


def stop_adapting(ctx: Context, ws_id) -> str:
    return stop_job(ctx, ws_id, KIND)


def build_domain_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    gr.Markdown(HELP)
    run, refresh_run = run_picker(ctx, ws_state, "The model whose pictures to compare with.",
                                  "domain-run")  # fmt: skip
    with gr.Row():
        files = gr.File(label="New pictures (pictures or a zip)", file_count="multiple",
                        height=120, elem_id="domain-files", scale=2)  # fmt: skip
        status = gr.Markdown(elem_id="domain-status")
    with gr.Row():
        sure = gr.Checkbox(label="yes, remove them", value=False, elem_id="domain-sure", scale=0)
        remove = gr.Button("Remove the new pictures", size="sm", elem_id="domain-remove",
                           scale=0)  # fmt: skip
    with gr.Row():
        map_method = gr.Radio([("PCA (quick)", "pca"), ("t-SNE (keeps neighbours together)",
                               "tsne")], value="pca", label="Map", elem_id="domain-map-method")  # fmt: skip
    go = gr.Button("Measure the shift", variant="primary", elem_id="domain-go")
    light = gr.HTML(elem_id="domain-light")
    with gr.Row():
        stats = gr.Dataframe(headers=STAT_HEADERS, interactive=False, elem_id="domain-stats", wrap=True,
                             label="The figures")  # fmt: skip
        classes = gr.Dataframe(headers=CLASS_HEADERS, interactive=False, elem_id="domain-classes",
                               label="Per class (when the new pictures are labelled)")  # fmt: skip
    with gr.Row():
        chart = gr.Plot(label="Both sets on a map", elem_id="domain-map", scale=3)
        picture = gr.Image(label="Click a point to see its picture", interactive=False,
                           height=300, elem_id="domain-picture", scale=1)  # fmt: skip
    picked = gr.Textbox(visible="hidden", elem_id="domain-picked")
    map_paths = gr.State([])
    with gr.Row():
        unlike = gr.Gallery(label="New pictures most unlike the training ones", columns=5,
                            height=180, elem_id="domain-unlike")  # fmt: skip
        typical = gr.Gallery(label="New pictures most like the training ones", columns=5,
                             height=180, elem_id="domain-typical")  # fmt: skip

    gr.Markdown(ADAPT_HELP)
    with gr.Row():
        method = gr.Radio(METHODS, value="coral", label="How", elem_id="domain-method", scale=3)
        epochs = gr.Slider(
            1, 20, value=5, step=1, label="Adaptation epochs", elem_id="domain-epochs"
        )
    with gr.Row():
        adapt_go = gr.Button("Teach the model the new pictures", elem_id="domain-adapt")
        stop = gr.Button("Stop", variant="stop", elem_id="domain-stop")
    with gr.Row():
        stopped = gr.Dropdown([], label="Stopped adaptation", visible=False, scale=3,
                              elem_id="domain-stopped")  # fmt: skip
        go_on = gr.Button("Continue it", visible=False, elem_id="domain-continue", scale=1)
    adapt_status = gr.Markdown(elem_id="domain-adapt-status")
    curves = gr.Plot(label="Training with the new pictures", elem_id="domain-curves")
    results = gr.Dataframe(headers=RESULT_HEADERS, interactive=False, elem_id="domain-results",
                           label="Before and after (the new pictures' labels only measure)")  # fmt: skip
    per_class = gr.Dataframe(headers=PER_CLASS_HEADERS, interactive=False,
                             elem_id="domain-results-classes",
                             label="Per class: share of each class's new pictures recognised")  # fmt: skip
    bind = functools.partial
    followed = [adapt_status, curves, results, per_class, stopped, go_on]
    adapt_go.click(bind(adapt, ctx), [ws_state, run, method, epochs], followed,
                   concurrency_limit=None, show_progress="hidden")  # fmt: skip
    go_on.click(bind(continue_adapting, ctx), [ws_state, stopped], followed,
                concurrency_limit=None, show_progress="hidden")  # fmt: skip
    stop.click(bind(stop_adapting, ctx), ws_state, None, concurrency_limit=None)
    files.upload(friendly(bind(add_new, ctx)), [ws_state, files], status)
    # The tick is cleared only after a removal: a refusal leaves the box free to be ticked
    # (an output of a failed event is covered by its error state).
    remove.click(friendly(bind(remove_new, ctx)), [ws_state, sure], status).success(
        lambda: False, None, sure
    )
    go.click(friendly(bind(measure, ctx)), [ws_state, run, map_method],
             [light, stats, classes, chart, unlike, typical, map_paths])  # fmt: skip
    chart.change(None, None, None, js=CLICK_JS)
    picked.change(show_point, [map_paths, picked], picture)

    def refresh(ws_id):
        return refresh_run(ws_id), new_pictures_status(ctx, ws_id), *stopped_choices(ctx, ws_id)

    return TabParts([run, status, stopped, go_on], refresh, exposes={"run": run})
