"""Model tab: pick a backbone from the catalog and choose how much of it to freeze."""

from __future__ import annotations

import gradio as gr

from ..backbones import (
    CATALOG,
    DEFAULT_BACKBONE,
    catalog,
    catalog_needs_timm,
    get_spec,
    measure_speed,
)
from .common import friendly, load_engine

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


def groups_of(name: str) -> list[tuple[str, int]]:
    """``(group name, parameter count)`` from input to output."""
    _facts_on_disk()
    return get_spec(name).group_sizes


def catalog_rows() -> list[list]:
    _facts_on_disk()
    return [
        [
            r["title"],
            r["name"],
            r["params_m"],
            r["input_size"],
            SOURCE_WORDS[r["weights"]],
            r["about"],
        ]
        for r in catalog()
    ]


def freeze_summary(name: str, frozen_count: int) -> str:
    """A table of groups with their state, and the trainable/frozen counts."""
    groups = groups_of(name)
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
        f"frozen.\n\n" + "\n".join(rows)
    )


def freeze_spec(name: str, frozen_count: int) -> str:
    """The engine's freeze spec for the slider value: 'backbone' when only the head trains."""
    groups = groups_of(name)
    frozen_count = max(0, min(int(frozen_count), len(groups) - 1))
    return "backbone" if frozen_count == len(groups) - 1 else str(frozen_count)


def build_model_tab() -> dict:
    gr.Markdown(HELP)
    table = gr.Dataframe(
        label="Backbones",
        headers=[
            "backbone",
            "timm name",
            "params (M)",
            "input px",
            "ms per picture here",
            "pretrained weights now",
            "about",
        ],
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

    @friendly
    def on_backbone(name):
        count = len(groups_of(name))
        row = next(r for r in catalog() if r["name"] == name)
        if not row["pretrained_available"]:
            gr.Warning(
                f"{row['title']} has no pretrained weights available offline; training "
                "it will fail. Pick an EfficientNet-Lite to work offline."
            )
        return gr.update(maximum=count - 1, value=count - 1), freeze_summary(name, count - 1)

    def measure(progress=gr.Progress()):
        load_engine()
        for name in progress.tqdm(list(CATALOG), desc="timing each backbone"):
            measure_speed(name)
        return catalog_rows()

    speed_btn.click(friendly(measure), None, table)
    backbone.change(on_backbone, backbone, [freeze, summary])
    freeze.change(friendly(freeze_summary), [backbone, freeze], summary)

    def refresh():
        """Catalog and layer groups, read when the page opens (from disk after the first start)."""
        n = len(groups_of(DEFAULT_BACKBONE))
        return (
            catalog_rows(),
            gr.update(maximum=n - 1, value=n - 1),
            freeze_summary(DEFAULT_BACKBONE, n - 1),
        )

    return {
        "backbone": backbone,
        "freeze": freeze,
        "refresh": refresh,
        "views": [table, freeze, summary],
    }
