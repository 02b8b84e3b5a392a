"""Plotly figures shared by the app and reports: data, training, evaluation and explanations.

Each function takes plain data and returns a ``plotly.graph_objects.Figure``; none keeps state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "class_counts",
    "training_curves",
    "confusion_matrix",
    "top_k_bar",
    "faithfulness_curves",
    "sanity_curve",
    "compression_tradeoff",
    "shift_map",
]

_SPLIT_COLOURS = {"train": "#4C78A8", "val": "#F58518", "test": "#54A24B"}
_LAYOUT = dict(margin=dict(l=40, r=20, t=50, b=40), template="plotly_white", height=360)


def class_counts(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Stacked bars of pictures per class, one colour per split."""
    fig = go.Figure()
    for split, per_class in counts.items():
        fig.add_bar(
            name=split,
            x=list(per_class),
            y=list(per_class.values()),
            marker_color=_SPLIT_COLOURS.get(split),
        )
    fig.update_layout(
        barmode="stack", title="Pictures per class", yaxis_title="pictures", **_LAYOUT
    )
    return fig


def training_curves(runs: dict[str, Sequence[dict]]) -> go.Figure:
    """Loss and accuracy per epoch; several runs overlay with one colour each.

    Args:
        runs: ``{run name: rows}``, each row with ``epoch``, ``train_loss``, ``val_loss``,
            ``train_acc`` and ``val_acc`` (``history.csv`` rows or Epoch events as dicts).
    """
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("Loss (lower is better)", "Accuracy (higher is better)")
    )
    palette = ["#4C78A8", "#E45756", "#54A24B", "#B279A2", "#FF9DA6"]
    for i, (name, rows) in enumerate(runs.items()):
        colour = palette[i % len(palette)]
        epochs = [int(r["epoch"]) for r in rows]
        for col, (train_key, val_key) in enumerate(
            (("train_loss", "val_loss"), ("train_acc", "val_acc")), start=1
        ):
            for key, dash, label in ((train_key, "dot", "train"), (val_key, "solid", "validation")):
                values = [None if r.get(key) in (None, "") else float(r[key]) for r in rows]
                fig.add_scatter(
                    x=epochs,
                    y=values,
                    mode="lines+markers",
                    row=1,
                    col=col,
                    name=f"{name} {label}" if len(runs) > 1 else label,
                    line=dict(color=colour, dash=dash),
                    showlegend=col == 1,
                    legendgroup=f"{name}{label}",
                )
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(**_LAYOUT)
    return fig


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> go.Figure:
    """Rows are the true class, columns the predicted one; each cell shows its count."""
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(labels),
            y=list(labels),
            colorscale="Blues",
            showscale=False,
            text=[[str(v) for v in row] for row in matrix],
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Confusion matrix",
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        **_LAYOUT,
    )
    return fig


def top_k_bar(top: Sequence[tuple[str, float]], title: str = "") -> go.Figure:
    """Horizontal bars of class probabilities, the most likely on top."""
    labels = [k for k, _ in top][::-1]
    values = [p for _, p in top][::-1]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color="#4C78A8",
            text=[f"{p:.1%}" for p in values],
            textposition="auto",
        )
    )
    fig.update_layout(
        title=title,
        xaxis=dict(range=[0, 1], tickformat=".0%"),
        **{**_LAYOUT, "height": 80 + 40 * len(top)},
    )
    return fig


_PALETTE = ["#4C78A8", "#E45756", "#54A24B", "#B279A2", "#F58518", "#72B7B2"]


def faithfulness_curves(scores: dict[str, dict], titles: dict[str, str] | None = None) -> go.Figure:
    """Deletion (left, should fall fast) and insertion (right, should rise fast) per method.

    Args:
        scores: ``{method: Faithfulness.to_dict()}``; a ``"random"`` entry is drawn grey and
            dashed, as the floor a method has to beat.
        titles: Display names for the methods.
    """
    titles = titles or {}
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "Deletion: remove top pixels first (lower is better)",
            "Insertion: reveal top pixels first (higher is better)",
        ),
    )
    for i, (key, score) in enumerate(scores.items()):
        random = key == "random"
        name = "random map" if random else titles.get(key, key)
        for col, kind in ((1, "deletion"), (2, "insertion")):
            fig.add_scatter(
                x=[100 * f for f in score["fractions"]],
                y=score[kind],
                mode="lines",
                row=1,
                col=col,
                name=f"{name} (score {score['score']:+.2f})",
                legendgroup=key,
                showlegend=col == 1,
                line=dict(
                    color="#9E9E9E" if random else _PALETTE[i % len(_PALETTE)],
                    dash="dash" if random else "solid",
                ),
                hovertemplate=f"{name}: %{{y:.1%}} at %{{x:.0f}}% of pixels<extra></extra>",
            )
    fig.update_xaxes(title_text="% of pixels changed", range=[0, 100])
    fig.update_yaxes(title_text="probability of the class", range=[0, 1.02], tickformat=".0%")
    fig.update_layout(**{**_LAYOUT, "height": 380})
    return fig


def sanity_curve(steps: Sequence[tuple[str, float]], repeat: float, title: str) -> go.Figure:
    """Similarity to the real map as the model is randomised from the head down."""
    labels = ["trained model"] + [label for label, _ in steps]
    values = [repeat] + [value for _, value in steps]
    fig = go.Figure(go.Scatter(x=labels, y=values, mode="lines+markers", line_color="#4C78A8"))
    fig.add_hrect(y0=-1, y1=0.3, fillcolor="#54A24B", opacity=0.08, line_width=0)
    fig.update_layout(
        title=title,
        xaxis_title="weights replaced by random ones (from the head down)",
        yaxis=dict(title="similarity to the real map", range=[-0.2, 1.05]),
        **_LAYOUT,
    )
    return fig


def compression_tradeoff(rows: Sequence[dict], front: Sequence[bool]) -> go.Figure:
    """Accuracy against measured batch-1 latency, one marker per model (its area is the file
    size); the Pareto front (no model both faster and more accurate) is joined and ringed."""
    sizes = [r["size_bytes"] / 1e6 for r in rows]
    biggest = max(sizes, default=1.0) or 1.0
    fig = go.Figure()
    fig.add_scatter(
        x=[r["batch1_ms"] for r in rows],
        y=[r["accuracy"] for r in rows],
        mode="markers+text",
        text=[r.get("label", r["run"]) for r in rows],
        textposition="top center",
        cliponaxis=False,  # a label above a marker at the top stays readable
        marker=dict(
            size=[12 + 40 * (s / biggest) ** 0.5 for s in sizes],
            color=["#54A24B" if on else "#9D9D9D" for on in front],
            line=dict(width=[3 if on else 0 for on in front], color="#2F6B2F"),
        ),
        customdata=[[s, r["runtime"], r["run"]] for s, r in zip(sizes, rows)],
        hovertemplate="%{customdata[2]} (%{text})<br>accuracy %{y:.3f}<br>%{x:.1f} ms a picture"
        "<br>%{customdata[0]:.1f} MB<br>%{customdata[1]}<extra></extra>",
        name="models",
    )
    best = sorted((r for r, on in zip(rows, front) if on), key=lambda r: r["batch1_ms"])
    fig.add_scatter(
        x=[r["batch1_ms"] for r in best],
        y=[r["accuracy"] for r in best],
        mode="lines",
        line=dict(color="#54A24B", dash="dot"),
        name="best trade-offs",
        hoverinfo="skip",
    )
    fig.update_layout(
        title="Accuracy against speed (marker size: file size)",
        xaxis_title="milliseconds per picture (batch 1, measured here)",
        yaxis_title="accuracy on held-out pictures",
        yaxis_range=[max(0.0, min((r["accuracy"] for r in rows), default=0.0) - 0.1), 1.12],
        **_LAYOUT,
    )
    return fig


def shift_map(points: Sequence[Sequence[float]], paths: Sequence[str], labels: Sequence,
              n_source: int, method: str = "pca") -> go.Figure:  # fmt: skip
    """Both sets of pictures on a plane (the first ``n_source`` points are the training
    pictures): the set by the marker's shape (circles: training, diamonds: new), the class by
    its colour (grey: no label). Each point carries its index (``customdata[2]``), which the
    Domain tab's click handler sends back to show the picture."""
    fig = go.Figure()
    classes = sorted({label for label in labels if label})
    colour = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(classes)}
    for name, rows, symbol in (
        ("training", range(n_source), "circle"),
        ("new", range(n_source, len(points)), "diamond"),
    ):
        for label in [*classes, None]:
            idx = [i for i in rows if (labels[i] or None) == label]
            if not idx:
                continue
            fig.add_scatter(
                x=[points[i][0] for i in idx], y=[points[i][1] for i in idx], mode="markers",
                name=f"{name} · {label or 'no label'}",
                marker=dict(color=colour.get(label, "#9D9D9D"), size=9, opacity=0.8,
                            symbol=symbol, line=dict(width=0.5, color="white")),
                customdata=[[Path(paths[i]).name, label or "no label", i] for i in idx],
                hovertemplate="%{customdata[0]}<br>%{customdata[1]}<extra>" + name + "</extra>",
            )  # fmt: skip
    how = "t-SNE" if method == "tsne" else "PCA"
    fig.update_layout(
        title=f"Both sets on a map ({how} of the features: near means alike; click a point)",
        xaxis_title="first axis", yaxis_title="second axis", **_LAYOUT,
    )  # fmt: skip
    return fig


def layer_changes(changes: Sequence[dict]) -> go.Figure:
    """One bar per layer group, input to output: how far fine-tuning moved it from the
    pretrained layer (1 - CKA: 0 unchanged, 1 rebuilt); frozen groups grey."""
    fig = go.Figure()
    fig.add_bar(
        x=[c["group"] for c in changes], y=[1 - c["cka"] for c in changes],
        marker_color=["#BAB0AC" if c["frozen"] else "#4C78A8" for c in changes],
        customdata=[[c["cka"], "new" if c["weight_change"] is None else
                     f"{c['weight_change']:.1%}", "frozen" if c["frozen"] else "trained"]
                    for c in changes],
        hovertemplate="%{x} (%{customdata[2]})<br>CKA %{customdata[0]:.3f}<br>weights changed "
                      "%{customdata[1]}<extra></extra>",
    )  # fmt: skip
    fig.update_layout(
        title="What training changed, layer by layer (grey: frozen)",
        yaxis=dict(title="unchanged (0) … rebuilt (1): 1 − CKA", range=[0, 1]), **_LAYOUT,
    )  # fmt: skip
    return fig


def cka_heatmap(result: dict) -> go.Figure:
    """CKA between the stages of two models; each row's most similar column ringed."""
    fig = go.Figure()
    fig.add_heatmap(
        z=result["cka"], x=result["groups_b"], y=result["groups_a"], zmin=0, zmax=1,
        colorscale="Blues", colorbar=dict(title="CKA"),
        hovertemplate=result["a"] + " %{y} vs " + result["b"] + " %{x}: %{z:.3f}<extra></extra>",
    )  # fmt: skip
    best = result["most_similar"]
    fig.add_scatter(
        x=[b for _, b, _ in best], y=[a for a, _, _ in best], mode="markers",
        marker=dict(symbol="circle-open", size=16, color="#E45756", line=dict(width=2)),
        name="most alike", hoverinfo="skip",
    )  # fmt: skip
    fig.update_layout(
        title=f"Which stages see alike: {result['a']} (rows) vs {result['b']} (columns)",
        xaxis_title=result["b"], yaxis=dict(title=result["a"], autorange="reversed"),
        showlegend=False,
        **{**_LAYOUT, "height": 460},
    )  # fmt: skip
    return fig
