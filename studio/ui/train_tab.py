"""Train tab: presets, advanced settings, live curves, Stop, continuing a stopped run, and the
run history."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import gradio as gr

from ..errors import StudioError
from ..inspection import charts
from ..runs import can_resume, describe_run
from ..training.presets import PRESETS  # no torch: presets imports it only when applied
from .common import (
    Context,
    as_text,
    claim_and_start,
    friendly,
    history_rows,
    load_engine,
    offer_runs,
    run_choices,
    stop_job,
)
from .model_tab import freeze_spec
from .tabs import TabParts

HELP = """### 3. Train
Pick a preset and press **Start training**. The curves grow while it learns: *loss* should go
down, *accuracy* up. The *validation* line uses pictures the model does not learn from; when it
stops improving, more training will not help. **Stop** ends the run and keeps the best model;
**Continue it** goes on with a stopped run from where it stopped."""

# The engine's presets (studio.training.presets), by their titles; Custom uses the Advanced settings
# and the Model tab's freeze slider as they are.
PRESET_NAMES = {"Auto": "auto", **{p.title: name for name, p in PRESETS.items()}}
CUSTOM = "Custom"
PRESET_INFO = (
    "Auto picks for your pictures and this computer (Quick below 50 pictures a class, where "
    "fine-tuning did not help; else Balanced if it fits in five minutes). Quick: only the last "
    "layer learns (seconds). Balanced and Thorough also fine-tune the top of the network "
    "(minutes). "
    "Custom: the settings below as you set them, and the Model tab's choice of layers."
)
# The Advanced fields a preset fills in, in the order of on_preset's outputs.
PRESET_FIELDS = (
    "epochs", "lr", "layer_decay", "head_epochs", "patience", "weight_decay",
    "label_smoothing", "augment",
)  # fmt: skip


def history_table(ctx: Context, ws_id: str) -> list[list]:
    """One row per run: its classes, backbone, freeze, epochs actually run and accuracy."""
    rows = []
    for run in ctx.workspace(ws_id).runs():
        d = describe_run(run)
        ran = "-" if d["epochs_run"] is None else d["epochs_run"]
        acc = d["accuracy"]
        rows.append(
            [
                d["name"],
                ", ".join(d["classes"]) or "?",
                d["backbone"],
                d["freeze"],
                f"{ran} of {d['epochs']}",
                f"{acc:.1%}" if acc is not None else "not finished",
            ]
        )
    return rows


def status_line(snap) -> str:
    """The run's progress in words: step, share done and the time left for this step."""
    text = f"**{snap.message}.**"
    if snap.state in ("caching", "training"):
        text += f" {snap.fraction:.0%} of the training done."
    if snap.eta_seconds:
        what = "to prepare" if snap.state == "caching" else "left (less if it stops early)"
        text += f" About {snap.eta_seconds:.0f} s {what}."
    return text


# The Advanced settings, in the order the tab lays them out and hands them to the handlers:
# each is the TrainConfig field of that name, read from the page as this type.
SETTINGS = {
    "epochs": int, "batch_size": int, "lr": float, "layer_decay": float, "head_epochs": int,
    "patience": int, "weight_decay": float, "label_smoothing": float, "seed": int, "augment": str,
    "task_weights": str,
}  # fmt: skip


def settings_from_page(values) -> dict:
    """The Advanced settings' values (in :data:`SETTINGS` order) as TrainConfig fields."""
    if len(values) != len(SETTINGS):
        raise ValueError(f"{len(values)} settings for {len(SETTINGS)} fields")
    return {name: kind(v) for (name, kind), v in zip(SETTINGS.items(), values)}


def _start_job(ws, dataset, preset: str, bb: str, frz, settings: dict, devices: int = 1):
    """A started (or queued) training job for the Train tab's settings, and a line saying
    what the preset set (and, for Auto, what it chose and why). Head epochs above the epochs
    are not cut here: the engine's check says so."""
    load_engine()
    from ..jobs import TrainingJob  # the engine's torch side loads on first use
    from ..training.presets import apply_preset
    from ..training.train import TrainConfig

    config = TrainConfig(
        data=str(ws.data_dir),
        out=str(ws.new_run_dir(bb, dataset.classes)),
        backbone=bb,
        freeze=freeze_spec(bb, frz),
        **settings,
    )
    config, note = apply_preset(config, PRESET_NAMES.get(preset, "custom"), dataset)
    job = TrainingJob(config.validate(), dataset, devices=max(1, int(devices or 1)))
    return job.start(), note


def continue_choices(ctx: Context, ws_id: str) -> tuple:
    """The stopped runs that can go on (newest first; not the one training now: it has a
    checkpoint too) and the button, shown only when there are any."""
    job = ctx.jobs.get(ws_id, "training")
    config = getattr(job, "config", None) if job is not None and not job.done else None
    running = Path(config.out).name if config is not None else None
    return offer_runs(
        [p.name for p in ctx.workspace(ws_id).runs() if can_resume(p) and p.name != running]
    )


def _follow(ctx: Context, ws_id: str, job, note: str, earlier: list[dict] | None = None):
    """Stream a job's progress into (status, curves, history, compare, the stopped runs and
    their button) until it ends; ``earlier``: the epochs a continued run had already run."""
    shown, said, earlier = -1, "", earlier or []
    note = f"\n\n{as_text(note[:1].upper() + note[1:])}." if note else ""
    unchanged = (gr.update(),) * 4

    def curves(epochs) -> object:
        return charts.training_curves({"this run": earlier + [e.to_dict() for e in epochs]})

    while True:
        snap = job.snapshot()
        text = status_line(snap) + note
        if len(snap.epochs) != shown or text != said or job.done:
            curves_now = gr.update()
            if len(snap.epochs) != shown:  # redraw the curves only when they grew
                shown = len(snap.epochs)
                curves_now = curves(snap.epochs)
            said = text
            yield text, curves_now, *unchanged
        if job.done:
            break
        time.sleep(0.5)
    snap = job.snapshot()
    ws = ctx.workspace(ws_id)
    if snap.state == "failed":
        raise gr.Error(as_text(snap.message), print_exception=False)
    if snap.state == "cancelled":
        yield f"**{snap.message}.**", gr.update(), *unchanged
        return
    yield (
        f"**{snap.message}.** Open the Evaluate tab to see where it goes wrong.{note}",
        curves(snap.epochs),
        history_table(ctx, ws_id),
        gr.update(choices=run_choices(ws)),
        *continue_choices(ctx, ws_id),
    )


def preset_fields(title: str) -> list:
    """The Advanced fields' values for a preset (unchanged for Auto and Custom, which decide
    at Start)."""
    name = PRESET_NAMES.get(title)
    if name not in PRESETS:
        return [gr.update()] * len(PRESET_FIELDS)
    settings = PRESETS[name].settings
    return [settings.get(f, gr.update()) for f in PRESET_FIELDS]


def preview_augmentation(ctx: Context, ws_id, aug: str, bb: str) -> list:
    """Eight training pictures as the chosen backbone will see them with ``aug``."""
    load_engine()
    from ..data.loaders import augmentation_preview
    from ..models.backbones import preprocess_config

    dataset = ctx.workspace(ws_id).dataset()
    samples = dataset.train[:: max(1, len(dataset.train) // 8)][:8]
    pictures = augmentation_preview([s.path for s in samples], preprocess_config(bb), aug)
    return [(p, dataset.classes[s.labels[0]]) for p, s in zip(pictures, samples)]


def start_training(ctx: Context, ws_id, preset_name: str, bb: str, frz, devices, *values):
    """Start training and stream its progress until it ends; on ``devices`` GPUs (processes
    started through torchrun) when more than one."""
    try:  # what needs no torch is checked first: "no pictures" must not wait for it
        settings = settings_from_page(values)
        ws = ctx.workspace(ws_id)
        dataset = ws.dataset(seed=settings["seed"])
    except StudioError as exc:
        raise gr.Error(as_text(exc), print_exception=False) from None
    yield from _run_job(
        ctx, ws_id, lambda: (*_start_job(ws, dataset, preset_name, bb, frz, settings, devices), [])
    )


def continue_training(ctx: Context, ws_id, name: str | None, devices):
    """Go on with a stopped (or killed) run from its last finished epoch to the epochs it was
    started with, in its own folder; its curves show the epochs it had run too."""
    try:
        if not name:
            raise StudioError("there is no stopped run to continue")
        run_dir = ctx.workspace(ws_id).resolve_run(name)
    except StudioError as exc:
        raise gr.Error(as_text(exc), print_exception=False) from None

    def make():
        load_engine()
        from ..jobs import TrainingJob
        from ..training.train import resume_config

        job = TrainingJob(resume_config(run_dir), devices=max(1, int(devices or 1)))
        earlier = history_rows(run_dir)
        return job.start(), f"continuing {name} after its epoch {len(earlier)}", earlier

    yield from _run_job(ctx, ws_id, make)


def _run_job(ctx: Context, ws_id: str, make):
    """Start the job ``make()`` sets up (``-> (started job, note, earlier epochs)``) in the
    workspace's training slot and follow it."""
    made: dict = {}

    def started():
        job, made["note"], made["earlier"] = make()
        return job

    job = claim_and_start(ctx, ws_id, "training", started)
    yield from _follow(ctx, ws_id, job, made["note"], made["earlier"])


def stop_training(ctx: Context, ws_id) -> str:
    """Ask the workspace's training job to stop; what happens next, in words (also a toast)."""
    return stop_job(ctx, ws_id, "training")


def overlay_runs(ctx: Context, ws_id, names) -> object:
    """The chosen runs' curves on one chart (nothing when none is ticked)."""
    ws = ctx.workspace(ws_id)
    runs = {name: history_rows(ws.resolve_run(name)) for name in names or []}
    return charts.training_curves(runs) if runs else None


def refresh_history(ctx: Context, ws_id):
    """The run history table, the runs to compare, the GPUs to train on (offered only when
    this computer has more than one), and the stopped runs that can go on."""
    ws = ctx.workspace(ws_id)
    return (
        history_table(ctx, ws_id),
        gr.update(choices=run_choices(ws)),
        devices_choice(),
        *continue_choices(ctx, ws_id),
    )


def devices_choice():
    """How many GPUs a run may use: 1..N, shown only where N > 1 (torch is loaded by then)."""
    load_engine()
    from ..training.distributed import gpu_count

    count = gpu_count()
    return gr.update(choices=list(range(1, max(1, count) + 1)), visible=count > 1)


def _settings_layout() -> dict:
    """The Advanced settings' components by TrainConfig field, in :data:`SETTINGS` order."""
    c = {}
    # fmt: off
    with gr.Row():
        c["epochs"] = gr.Slider(1, 100, value=5, step=1, label="Epochs",
                                info="How many times the model sees every training picture.")
        c["batch_size"] = gr.Slider(1, 128, value=16, step=1, label="Batch size",
                                    info="Pictures per learning step; smaller uses less memory.")
        c["lr"] = gr.Number(value=1e-3, label="Learning rate",
                            info="How big each learning step is. 0.001 is a good start.")
    with gr.Row():
        c["layer_decay"] = gr.Slider(0.3, 1.0, value=0.75, step=0.05, label="Layer-wise LR decay",
                                     info="Earlier layers learn this much slower per group.")
        c["head_epochs"] = gr.Slider(
            0, 20, value=0, step=1, label="Last-layer-only epochs first",
            info="Staged unfreezing: warm up the last layer, then the rest.")
        c["patience"] = gr.Slider(0, 20, value=0, step=1, label="Early stopping patience",
                                  info="Stop after this many epochs without improvement (0 = off).")
    with gr.Row():
        c["weight_decay"] = gr.Number(value=0.01, label="Weight decay",
                                      info="Keeps weights small; fights overfitting.")
        c["label_smoothing"] = gr.Slider(0, 0.3, value=0.1, step=0.05, label="Label smoothing",
                                         info="Teaches the model not to be over-confident.")
        c["seed"] = gr.Number(value=0, precision=0, label="Seed",
                              info="Same seed, same pictures, same settings: the same result.")
    c["augment"] = gr.Radio(
        ["none", "light", "strong"], value="none", label="Augmentation",
        info="Randomly flips, crops and recolours training pictures so the "
        "model learns what matters, not where it is.")
    c["task_weights"] = gr.Radio(
        [("Equal", "equal"), ("Learned (uncertainty)", "uncertainty")], value="equal",
        label="Several tasks (a table with one column per task): how their losses count",
        elem_id="task-weights",
        info="Equal: every task counts the same. Learned: each task gets a weight that training "
        "finds (Kendall et al. 2018); a task that stays hard counts less. Only matters when "
        "layers of the backbone learn.")
    # fmt: on
    assert list(c) == list(SETTINGS)
    return c


def _history_layout():
    """The earlier runs: a table, the runs to compare and their curves."""
    gr.Markdown("#### Earlier runs")
    history = gr.Dataframe(
        headers=["run", "classes", "backbone", "freeze", "epochs run", "accuracy"],
        interactive=False,
        label="Run history",
    )
    compare = gr.CheckboxGroup(
        choices=[],
        label="Compare runs",
        info="Tick two or more runs to overlay their curves.",
        elem_id="compare-runs",
    )
    return history, compare, gr.Plot(label="Comparison", elem_id="compare-plot")


def build_train_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    backbone, freeze = built["model"].exposes["backbone"], built["model"].exposes["freeze"]
    gr.Markdown(HELP)
    preset = gr.Radio(
        [*PRESET_NAMES, CUSTOM], value="Auto", label="Preset", info=PRESET_INFO, elem_id="preset"
    )
    with gr.Accordion("Advanced settings", open=False):
        settings = _settings_layout()
        preview_btn = gr.Button("Preview augmented pictures")
        preview = gr.Gallery(
            label="Augmented samples", columns=8, height=160, elem_id="augment-preview"
        )
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="start-training")
        stop = gr.Button("Stop", variant="stop", elem_id="stop-training")
        devices = gr.Dropdown(
            [1], value=1, label="GPUs to train on", visible=False, elem_id="train-devices",
            info="This computer has several GPUs: one process per GPU, started by PyTorch's "
            "torchrun, share each batch.",
        )  # fmt: skip
    with gr.Row():
        stopped = gr.Dropdown(
            [], label="Stopped run", visible=False, elem_id="stopped-runs", scale=3,
            info="A run stopped before its last epoch (or ended by closing the app) goes on "
            "from where it stopped, with its own settings.",
        )  # fmt: skip
        go_on = gr.Button("Continue it", visible=False, elem_id="continue-training", scale=1)
    status = gr.Markdown("Not started.", elem_id="train-status")
    curves = gr.Plot(label="Training curves", elem_id="train-curves")
    history, compare, compare_plot = _history_layout()

    preset.input(preset_fields, preset, [settings[f] for f in PRESET_FIELDS])
    # Changing a setting by hand (or the layers on the Model tab) makes the run a custom one.
    for component in [*settings.values(), freeze]:
        component.input(lambda: CUSTOM, None, preset)
    bind = functools.partial
    preview_btn.click(
        friendly(bind(preview_augmentation, ctx)),
        [ws_state, settings["augment"], backbone],
        preview,
    )
    followed = [status, curves, history, compare, stopped, go_on]
    start.click(
        bind(start_training, ctx),
        [ws_state, preset, backbone, freeze, devices, *settings.values()],
        followed,
        concurrency_limit=None,
        api_name="train",
        # No overlay on the outputs: the curves are what the tab is for, and they must stay
        # visible while they grow; the status line says how far the run is.
        show_progress="hidden",
    )
    go_on.click(bind(continue_training, ctx), [ws_state, stopped, devices], followed,
                concurrency_limit=None, show_progress="hidden")  # fmt: skip
    stop.click(bind(stop_training, ctx), ws_state, None, concurrency_limit=None)
    compare.change(friendly(bind(overlay_runs, ctx)), [ws_state, compare], compare_plot)
    return TabParts([history, compare, devices, stopped, go_on], bind(refresh_history, ctx))
