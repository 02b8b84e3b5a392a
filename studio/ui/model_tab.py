"""Model tab: pick a backbone from the catalog and choose how much of it to freeze."""

from __future__ import annotations

import functools

import gradio as gr

from ..models.backbones import (
    CATALOG,
    DEFAULT_BACKBONE,
    catalog,
    catalog_needs_timm,
    get_spec,
    measure_speed,
)
from ..models.freeze import spec_for_count
from .common import Context, friendly, load_engine
from .rank_panel import build_rank_panel
from .tabs import TabParts

HELP = """### 2. Choose a starting network
A **backbone** is a network already trained on a million photos; it starts out knowing edges,
textures and shapes. **Freezing** keeps its first layers exactly as they are and teaches only the
later ones: faster, and better with few pictures. Start with EfficientNet-Lite0, everything
frozen but the last layer."""

SOURCE_WORDS = {
    "bundled": "yes, built in",
    "hub-cache": "yes, downloaded before",
    "hub": "yes, will download",
    "none": "no: not available offline",
}


def _facts_on_disk() -> None:
    """The catalog's facts come from torch and timm on the first start only; later starts read
    them from disk. Importing goes through the engine's lock (timm cannot be imported twice)."""
    if catalog_needs_timm():
        load_engine()


def groups_of(name: str, num_classes: int = 2) -> list[tuple[str, int]]:
    """``(group name, parameter count)`` from input to output, the head sized for the classes."""
    _facts_on_disk()
    return get_spec(name).group_sizes_for(num_classes)


HEADERS = [
    "backbone",
    "timm name",
    "params (M)",
    "input px",
    "ms per picture here",
    "pretrained weights now",
    "about",
]


def catalog_rows() -> list[list]:
    """One row per backbone, in the order of :data:`HEADERS`."""
    _facts_on_disk()
    return [
        [
            r["title"],
            r["name"],
            r["params_m"],
            r["input_size"],
            r["ms_per_image"] if r["ms_per_image"] is not None else "not measured",
            SOURCE_WORDS[r["weights"]],
            r["about"],
        ]
        for r in catalog()
    ]


def class_count(ctx: Context, ws_id: str | None) -> int:
    """The number of classes the head will have: the workspace's (two until it has more)."""
    return max(2, len(ctx.workspace(ws_id).classes())) if ws_id else 2


def freeze_summary(name: str, frozen_count: int, num_classes: int = 2) -> str:
    """A table of groups with their state, and the trainable/frozen counts."""
    groups = groups_of(name, num_classes)
    frozen_count = max(0, min(int(frozen_count), len(groups) - 1))
    rows = ["| layer group | parameters | state |", "|---|---:|---|"]
    for i, (group, n) in enumerate(groups):
        state = "🔒 frozen" if i < frozen_count else "✏️ trains"
        rows.append(f"| {group} | {n:,} | {state} |")
    frozen = sum(n for _, n in groups[:frozen_count])
    trainable = sum(n for _, n in groups[frozen_count:])
    start = groups[frozen_count][0]
    return (
        f"**Training from `{start}` up:** {trainable:,} parameters learn, {frozen:,} stay "
        f"frozen (with {num_classes} classes).\n\n" + "\n".join(rows)
    )


def freeze_spec(name: str, frozen_count: int) -> str:
    """The engine's freeze spec for the slider value: 'backbone' when only the head trains."""
    return spec_for_count(frozen_count, len(groups_of(name)))


def on_backbone(ctx: Context, name: str, ws_id):
    """A new backbone: its layer groups on the slider (only the head trains at first) and what
    that means; a warning when its weights are not on this computer."""
    classes = class_count(ctx, ws_id)
    count = len(groups_of(name))
    row = next(r for r in catalog() if r["name"] == name)
    if not row["pretrained_available"]:
        gr.Warning(
            f"{row['title']} has no pretrained weights available offline; training "
            "it will fail. Pick an EfficientNet-Lite to work offline."
        )
    return gr.update(maximum=count - 1, value=count - 1), freeze_summary(name, count - 1, classes)


def on_freeze(ctx: Context, name: str, frozen: int, ws_id) -> str:
    return freeze_summary(name, frozen, class_count(ctx, ws_id))


def measure_all(progress=gr.Progress()) -> list[list]:
    """Time every catalog backbone here; the catalog rows with the figures."""
    load_engine()
    for name in progress.tqdm(list(CATALOG), desc="timing each backbone"):
        measure_speed(name, batch=4)  # a dozen backbones in seconds on a 2-core laptop
    return catalog_rows()


def refresh_catalog():
    """Catalog and layer groups, read when the page opens (from disk after the first start)."""
    n = len(groups_of(DEFAULT_BACKBONE))
    return (
        catalog_rows(),
        gr.update(maximum=n - 1, value=n - 1),
        freeze_summary(DEFAULT_BACKBONE, n - 1),
    )


def build_model_tab(ctx: Context, ws_state: gr.State, tab: gr.Tab, built: dict) -> TabParts:
    gr.Markdown(HELP)
    table = gr.Dataframe(
        label="Backbones",
        headers=HEADERS,
        interactive=False,
        wrap=True,
        elem_id="catalog",
    )
    speed_btn = gr.Button("Measure speed on this computer", size="sm")
    choices = [(f"{s.title} ({s.name})", s.name) for s in CATALOG.values()]
    backbone = gr.Dropdown(
        choices=choices,
        value=DEFAULT_BACKBONE,
        label="Backbone",
        info="Backbones marked 'not available offline' need internet or a weights file.",
        elem_id="backbone",
    )
    build_rank_panel(ctx, ws_state, backbone)
    freeze = gr.Slider(
        0,
        1,
        value=1,
        step=1,
        label="Train from this layer up",
        info="Slide left to let more of the network learn (slower, needs more "
        "pictures). Far right: only the last layer learns.",
        elem_id="freeze-slider",
    )
    summary = gr.Markdown("Reading the catalog...", elem_id="freeze-summary")

    frozen = friendly(functools.partial(on_freeze, ctx))
    speed_btn.click(friendly(measure_all), None, table)
    # Opening the tab sizes the head for the classes the Data tab now has. A slow answer (torch
    # still loading) must not overwrite a choice made meanwhile: a change cancels it.
    opened = tab.select(frozen, [backbone, freeze, ws_state], summary)
    backbone.change(
        friendly(functools.partial(on_backbone, ctx)),
        [backbone, ws_state],
        [freeze, summary],
        cancels=[opened],
    )
    freeze.change(frozen, [backbone, freeze, ws_state], summary, cancels=[opened])
    return TabParts(
        [table, freeze, summary],
        refresh_catalog,
        refresh_inputs=[],
        on_open=False,
        on_select=False,  # the tab's own select sizes the head (above)
        on_load=True,
        exposes={"backbone": backbone, "freeze": freeze},
    )
