"""Explain tab: attribution maps side by side, and how far each one can be trusted."""

from __future__ import annotations

import functools
import threading

import gradio as gr

from ..data.tasks import flat_name, task_metrics
from ..errors import StudioError
from ..inspection import charts
from .common import IMAGENET, Context, friendly, load_engine, run_choices, run_metrics
from .tabs import TabParts

HELP = """### 5. Why did it say that?
Pick a picture and one or more **methods**: each paints the parts of the picture that pushed the
model towards a class (bright = strong evidence). Methods disagree, so two checks tell you which
map to believe: **faithfulness** (hiding the bright pixels should make the model less sure) and a
**sanity check** (a model with random weights should give a different map)."""

PREDICTED, TRUE = "predicted class", "true class"
FAITH_HEADERS = [
    "method",
    "sureness left when its top pixels are hidden (lower is better)",
    "sureness when only its top pixels are shown (higher is better)",
    "overall: shown minus hidden (higher is better)",
    "verdict",
]
FAITH_WORDS = """*How these are measured:* the map's most important pixels are hidden (or shown alone)
a step at a time, and the model's certainty about the class is followed along the way; each
figure is the average certainty over all the steps (0 to 1, the area under the curve in the chart
above). A map that really shows what the model uses makes it unsure fast when those pixels are
hidden, and sure fast when only they are shown. The **random map** row is what chance gives: a
method must beat it to mean anything."""
METHOD_CHOICES = [
    ("Grad-CAM", "gradcam"),
    ("Integrated Gradients", "ig"),
    ("Saliency", "saliency"),
    ("GradientSHAP", "gradshap"),
    ("Occlusion (slow)", "occlusion"),
    ("Guided Grad-CAM", "guided-gradcam"),
]
# run_explain's inputs after the workspace, and its outputs, by component name.
EXPLAIN_INPUTS = (
    "source", "image", "methods", "target", "true_label", "smooth", "score", "sign", "opacity",
)  # fmt: skip
EXPLAIN_OUTPUTS = ("top_k", "answer", "maps", "faith_plot", "faith_table", "state")
SIGN_CHOICES = [
    ("for the class", "positive"),
    ("against the class", "negative"),
    ("both (size only)", "absolute"),
    ("both (red for, blue against)", "all"),
]


def _imagenet_choices() -> list[tuple[str, str]]:
    """Backbones whose ImageNet weights are on this computer: explain without training."""
    from ..models.backbones import CATALOG, weights_info

    return [
        (f"ImageNet classes · {spec.title} (no training needed)", IMAGENET + spec.name)
        for spec in CATALOG.values()
        if spec.bundled and weights_info(spec.name).source == "bundled"
    ]


def _gallery(result, sign: str, opacity: float) -> list:
    """The picture, then each method's map over it (drawn again when sign or opacity change)."""
    from ..inspection.attribution import for_display
    from ..inspection.explain import METHODS, overlay

    items = [(for_display(result.image), "the picture")]
    for key, values in result.maps.items():
        caption = f"{METHODS[key].title} · {result.seconds[key]:.1f}s"
        items.append((for_display(overlay(result.image, values, sign, opacity)), caption))
    return items


def legend(sign: str) -> str:
    """A colour bar for the maps, with what its two ends mean."""
    from ..inspection.attribution import colour_scale

    colours, low, high = colour_scale(sign)
    return (
        '<div style="display:flex;align-items:center;gap:.6em;font-size:.9em">'
        f"<span>{low}</span>"
        f'<span style="flex:0 0 14em;height:.9em;border-radius:3px;'
        f'background:linear-gradient(to right,{",".join(colours)})"></span>'
        f"<span>{high}</span></div>"
    )


def _faithfulness_table(scores: dict) -> list[list]:
    """One row per method, judged against the random map's curves, then the random map."""
    from ..inspection.explain import METHODS, faithfulness_verdict

    floor = scores.get("random")
    rows = []
    for key, score in scores.items():
        verdict = "the floor" if key == "random" else faithfulness_verdict(score, floor)
        title = "random map" if key == "random" else METHODS[key].title
        rows.append(
            [
                title,
                round(score.deletion_auc, 3),
                round(score.insertion_auc, 3),
                round(score.score, 3),
                verdict,
            ]
        )
    return rows


class Stops:
    """One Stop flag per workspace: the Stop button raises it, a new computation lowers it."""

    def __init__(self):
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def fresh(self, ws_id) -> threading.Event:
        """This browser's flag, lowered for a new computation."""
        with self._lock:
            flag = self._flags.setdefault(ws_id, threading.Event())
        flag.clear()
        return flag

    def stop(self, ws_id) -> None:
        with self._lock:
            flag = self._flags.get(ws_id)
        if flag is not None:
            flag.set()


def refresh_sources(ctx: Context, ws_id, current=None):
    """Newest run first, then the ImageNet models; the model another tab opened this one
    with (:meth:`Context.choose_run`), else the one already chosen, stays chosen."""
    runs = run_choices(ctx.workspace(ws_id))
    choices = [(name, name) for name in runs] + _imagenet_choices()
    values = [value for _, value in choices]
    wanted = ctx.chosen_run(ws_id, "explain-run")
    keep = next((v for v in (wanted, current) if v in values), values[0] if values else None)
    return gr.update(choices=choices, value=keep)


def float_parent_for(ctx: Context, ws_id, name) -> str | None:
    """The float run an int8, fp16 or bf16 run was made from, when it is in the workspace:
    attribution maps need gradients, which do not flow through a graph run by ONNX Runtime
    (nor usefully through bfloat16)."""
    if not name or name.startswith(IMAGENET):
        return None
    load_engine()
    from ..models.kinds import KINDS, model_record

    ws = ctx.workspace(ws_id)
    record = model_record(ws.resolve_run(name))
    kind = KINDS.get(record.get("kind"))
    parent = record.get("parent")
    if kind is None or kind.gradients or parent not in run_choices(ws):
        return None
    return parent


def pick_source(ctx: Context, ws_id, name, truth):
    """(the model, the classes one can explain for it: predicted, true when known, then each).
    An int8, fp16 or bf16 run is swapped for the float run it was made from, and the page says
    why."""
    if not name:
        return gr.update(), gr.update(choices=[PREDICTED], value=PREDICTED)
    parent = float_parent_for(ctx, ws_id, name)
    if parent is not None:
        gr.Info(f"{name} computes in 8 or 16 bits without usable gradients, so its maps "
                f"cannot be drawn; showing the float model it was made from, {parent}, "
                "instead.")  # fmt: skip
        name, swapped = parent, gr.update(value=parent)
    else:
        swapped = gr.update()
    explainer, _ = ctx.explainers.get(ctx.workspace(ws_id), name)
    first = [PREDICTED] + ([TRUE] if truth else [])
    classes = gr.update(choices=first + explainer.labels, value=TRUE if truth else PREDICTED)
    return swapped, classes


def _wanted_class(target_value, truth):
    """The class to explain: the true one, None for the predicted one, or the one chosen."""
    if target_value == TRUE:
        if not truth:
            raise StudioError("the true class is only known for pictures from the Evaluate tab")
        return truth
    return None if target_value == PREDICTED else target_value


def _headline(result) -> str:
    from ..inspection.explain import METHODS

    label, p = result.top[0]
    text = f"## {label} ({p:.0%} sure) · explaining **{result.target_label}**"
    for key, problem in result.problems.items():
        text += f"\n\n⚠️ {METHODS[key].title}: {problem}"
    return text


def run_explain(
    ctx: Context,
    stops: Stops,
    ws_id,
    name,
    path,
    chosen,
    target_value,
    truth,
    smoothgrad,
    faithful,
    sign_value,
    alpha,
    progress=gr.Progress(),
):
    """The maps for one picture, then (if asked) how faithful each is: (top-k chart, headline,
    gallery, faithfulness chart, faithfulness rows, what the redraw and sanity check reuse)."""
    if not path:
        raise StudioError("choose a picture first")
    wanted = _wanted_class(target_value, truth)
    from ..inspection.explain import METHODS

    explainer, lock = ctx.explainers.get(ctx.workspace(ws_id), name)
    stop = stops.fresh(ws_id)
    with lock:
        result = explainer.explain(
            path,
            chosen,
            wanted,
            smoothgrad=smoothgrad,
            progress=lambda f, title: progress(f, desc=title),
            should_stop=stop.is_set,
        )
        scores = {}
        if faithful and result.maps:
            progress(1.0, desc="scoring faithfulness")
            scores = explainer.faithfulness(result)
    titles = {k: m.title for k, m in METHODS.items()}
    curves = {k: v.to_dict() for k, v in scores.items()}
    return (
        charts.top_k_bar(result.top),
        _headline(result),
        _gallery(result, sign_value, alpha),
        charts.faithfulness_curves(curves, titles) if scores else None,
        _faithfulness_table(scores),
        {"result": result, "source": name},
    )


def redraw(saved, sign_value, alpha) -> list:
    """The last maps again with another sign or opacity, without recomputing them."""
    return _gallery(saved["result"], sign_value, alpha) if saved else []


def sanity(ctx: Context, ws_id, saved, method, smoothgrad, progress=gr.Progress()):
    """Randomise the model layer by layer and compare each new map with the real one."""
    if not saved:
        raise StudioError("explain a picture first, then check its map")
    from ..inspection.explain import METHODS

    explainer, lock = ctx.explainers.get(ctx.workspace(ws_id), saved["source"])
    progress(0.0, desc="randomising the model")
    with lock:
        check = explainer.sanity(
            saved["result"],
            method,
            progress=lambda f: progress(f, desc="comparing with a randomised model"),
            smoothgrad=smoothgrad and METHODS[method].smoothgrad,
        )
    chart = charts.sanity_curve(check.steps, check.repeat_similarity, METHODS[method].title)
    return f"**{check.verdict}**", chart


def shortcut_report(rows, skipped) -> tuple[str, list[list]]:
    """The shortcut check's finding in words, and one table row per class."""
    flagged = [r for r in rows if r.flagged]
    text = (
        "### ⚠️ Possible shortcuts\n" + "\n".join(f"- {r.message}" for r in flagged)
        if flagged
        else "### ✅ No shortcut found\nFor every class the evidence lies mostly inside the "
        "picture, not on its edges or in a corner."
    )
    if skipped:
        text += f"\n\n{len(skipped)} picture(s) could not be read and were left out."
    table = [
        [
            r.label,
            r.images,
            f"{r.border:.0%}",
            f"{r.corner:.0%} ({r.corner_name})",
            "⚠️" if r.flagged else "",
        ]
        for r in rows
    ]
    return text, table


def shortcuts(ctx: Context, stops: Stops, ws_id, name, progress=gr.Progress()):
    """Where the evidence lies over every test picture of a trained run."""
    if not name or name.startswith(IMAGENET):
        raise StudioError("the shortcut check needs a run you trained on your own pictures")
    from ..inspection.explain import evaluation_samples

    ws = ctx.workspace(ws_id)
    explainer, lock = ctx.explainers.get(ws, name)
    with lock:
        rows, skipped = explainer.shortcuts(
            evaluation_samples(ws.resolve_run(name)),
            progress=lambda f: progress(f, desc="checking test pictures"),
            should_stop=stops.fresh(ws_id).is_set,
        )
    return shortcut_report(rows, skipped)


def from_top_loss(ctx: Context, ws_id, run_name, task, evt: gr.SelectData):
    """Evaluate tab -> here: the clicked mistake (of the task shown there), its run, and its
    true class."""
    metrics, task = task_metrics(run_metrics(ctx.workspace(ws_id), run_name), task)
    row = metrics["top_losses"][evt.index]
    if not isinstance(row["true"], str):
        raise StudioError("pictures with several tags are explained one tag at a time here")
    note = (
        f"From the Evaluate tab: this picture is really **{row['true']}**, the model said "
        f"**{row['predicted']}** ({row['confidence']:.0%} sure). The maps show what speaks "
        "for the true class; choose *predicted class* to see what the model went by."
    )
    true = flat_name(task, row["true"]) if task else row["true"]
    selected = refresh_sources(ctx, ws_id, run_name)
    ctx.choose_run(ws_id, "explain-run", run_name)  # kept by the tab's refresh on opening
    return gr.Tabs(selected="explain"), selected, row["path"], true, note


def from_predict(ctx: Context, ws_id, run_name, path):
    """Predict tab -> here: the same picture and model, explained for the predicted class."""
    if not path:
        raise StudioError("choose a picture first")
    note = "From the Predict tab: what made the model give its answer."
    selected = refresh_sources(ctx, ws_id, run_name)
    ctx.choose_run(ws_id, "explain-run", run_name)  # kept by the tab's refresh on opening
    return gr.Tabs(selected="explain"), selected, path, None, note


def _picture_and_settings() -> dict:
    """The model, the picture, the methods and what to explain; returns them by name."""
    c = {}
    with gr.Row():
        c["source"] = gr.Dropdown(
            choices=[],
            label="Model",
            info="A run you trained, or an ImageNet model to explore without training.",
            elem_id="explain-run",
            scale=3,
        )
        c["refresh"] = gr.Button("Refresh list", scale=0)
    with gr.Row():
        with gr.Column(scale=1):
            c["image"] = gr.Image(
                label="Picture",
                type="filepath",
                sources=["upload", "clipboard", "webcam"],
                elem_id="explain-image",
                height=260,
            )
            c["origin"] = gr.Markdown(elem_id="explain-origin")
        with gr.Column(scale=1):
            c["methods"] = gr.CheckboxGroup(
                METHOD_CHOICES, value=["gradcam"], label="Methods", elem_id="explain-methods"
            )
            c["target"] = gr.Dropdown(
                choices=[PREDICTED],
                value=PREDICTED,
                label="Explain which class",
                info="What the model said (default), the true class, or any class.",
                filterable=True,
                elem_id="explain-target",
            )
            c["smooth"] = gr.Checkbox(
                label="SmoothGrad: average over noisy copies (less speckle, slower; "
                "Integrated Gradients and Saliency)",
                value=False,
            )
            c["score"] = gr.Checkbox(label="Score faithfulness", value=True)
            with gr.Row():
                c["go"] = gr.Button("Explain", variant="primary", elem_id="explain-go")
                c["stop"] = gr.Button("Stop", variant="stop")
        c["top_k"] = gr.Plot(label="What the model thinks", elem_id="explain-top")
    return c


def _maps_and_faithfulness() -> dict:
    """The answer, the maps with their colour scale and controls, and the faithfulness."""
    c = {"answer": gr.Markdown(elem_id="explain-answer")}
    c["maps"] = gr.Gallery(label="Maps", columns=4, height=300, elem_id="explain-maps")
    c["scale"] = gr.HTML(legend("positive"), elem_id="explain-legend")
    with gr.Row():
        c["sign"] = gr.Radio(SIGN_CHOICES, value="positive", label="Show evidence")
        c["opacity"] = gr.Slider(
            0, 1, value=0.6, step=0.05, label="Map opacity", elem_id="explain-opacity"
        )
    c["faith_plot"] = gr.Plot(label="Faithfulness", elem_id="explain-faith")
    c["faith_table"] = gr.Dataframe(
        headers=FAITH_HEADERS, interactive=False, elem_id="explain-faith-table"
    )
    gr.Markdown(FAITH_WORDS)
    return c


def _checks() -> dict:
    """The sanity check and the shortcut check, each in its accordion."""
    c = {}
    with gr.Accordion("Sanity check: does the map depend on what the model learnt?", open=False):
        gr.Markdown(
            "Replaces the model's weights with random ones, from the classifier down, and "
            "compares each new map with the real one. A trustworthy method gives a different map."
        )
        with gr.Row():
            c["sanity_method"] = gr.Dropdown(METHOD_CHOICES, value="gradcam", label="Method")
            c["sanity_go"] = gr.Button("Run sanity check", elem_id="explain-sanity-go")
        c["sanity_verdict"] = gr.Markdown(elem_id="explain-sanity-verdict")
        c["sanity_plot"] = gr.Plot(label="Similarity after randomising")
    with gr.Accordion("Shortcut check: background, frame or watermark?", open=False):
        gr.Markdown(
            "Looks at every picture the model was tested on and measures where the evidence "
            "lies. A class recognised by its background or a logo will fail on new pictures."
        )
        c["shortcut_go"] = gr.Button("Check every test picture", elem_id="explain-shortcut-go")
        c["shortcut_text"] = gr.Markdown(elem_id="explain-shortcut-text")
        c["shortcut_table"] = gr.Dataframe(
            headers=["class", "pictures", "evidence on the edges", "in one corner", "warning"],
            interactive=False,
        )
    return c


def build_explain_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    gr.Markdown(HELP)
    c = {**_picture_and_settings(), **_maps_and_faithfulness(), **_checks()}
    # The last Explanation and its model, so sign and opacity redraw without recomputing and the
    # sanity check starts from the same picture and class; and the true class when known.
    c["state"], c["true_label"] = gr.State(None), gr.State(None)
    stops, bind = Stops(), functools.partial
    source, sign, opacity = c["source"], c["sign"], c["opacity"]
    refresh = bind(refresh_sources, ctx)
    pick = friendly(bind(pick_source, ctx))
    explain_inputs = [ws_state] + [c[k] for k in EXPLAIN_INPUTS]
    explain_outputs = [c[k] for k in EXPLAIN_OUTPUTS]
    explain = friendly(bind(run_explain, ctx, stops))

    c["refresh"].click(refresh, [ws_state, source], source)
    source.change(pick, [ws_state, source, c["true_label"]], [source, c["target"]])
    c["image"].upload(lambda: (None, ""), None, [c["true_label"], c["origin"]])
    c["go"].click(explain, explain_inputs, explain_outputs)
    c["stop"].click(stops.stop, ws_state, None, queue=False)
    sign.change(friendly(redraw), [c["state"], sign, opacity], c["maps"])
    sign.change(legend, sign, c["scale"])
    opacity.release(friendly(redraw), [c["state"], sign, opacity], c["maps"])
    c["sanity_go"].click(
        friendly(bind(sanity, ctx)),
        [ws_state, c["state"], c["sanity_method"], c["smooth"]],
        [c["sanity_verdict"], c["sanity_plot"]],
    )
    c["shortcut_go"].click(
        friendly(bind(shortcuts, ctx, stops)),
        [ws_state, source],
        [c["shortcut_text"], c["shortcut_table"]],
    )
    # What an opener from another tab sets, after the tab itself; then the class list and maps.
    opened = [source, c["image"], c["true_label"], c["origin"]]

    def wire(tabs: gr.Tabs, built: dict) -> None:
        """'Explain this picture' on the Predict tab, and a click on a top-loss picture on the
        Evaluate tab, open the picture here with its maps."""
        predict, evaluate = built["predict"].exposes, built["evaluate"].exposes
        openers = [
            predict["explain_button"].click(
                friendly(bind(from_predict, ctx)),
                [ws_state, predict["run"], predict["image"]],
                [tabs, *opened],
            ),
            evaluate["losses"].select(
                friendly(bind(from_top_loss, ctx)),
                [ws_state, evaluate["run"], evaluate["task"]],
                [tabs, *opened],
            ),
        ]
        for event in openers:
            event.then(pick, [ws_state, source, c["true_label"]], [source, c["target"]]).then(
                explain, explain_inputs, explain_outputs
            )

    return TabParts([source], refresh, refresh_inputs=[ws_state, source], wire=wire)
