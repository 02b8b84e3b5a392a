"""The Model tab's "Rank backbones for my pictures": each backbone with weights here looks at
the person's training pictures, is scored (LogME and a quick linear test, studio.transfer.rank)
and timed; the best trade-off is then chosen in the backbone list."""

from __future__ import annotations

import functools

import gradio as gr

from ..errors import StudioError
from .common import Context, as_text, load_engine

__all__ = ["rank", "build_rank_panel"]

HELP = """**Not sure which to pick?** Let each backbone that works offline look at your training
pictures (a few seconds each): the studio scores how well what it sees fits your labels, before
any training, and chooses the best trade-off of quality and speed for you."""
HEADERS = ["backbone", "fit to your labels (LogME)", "quick test accuracy", "seconds",
           "ms per picture", "parameters (M)"]  # fmt: skip


def _rows(scores, pick: str | None = None) -> list[list]:
    rows = []
    for s in sorted(scores, key=lambda s: -s.logme):
        probe = "" if s.probe_accuracy is None else f"{s.probe_accuracy:.0%}"
        name = s.title + (" ← chosen" if s.backbone == pick else "")
        rows.append([name, round(s.logme, 3), probe, s.seconds, s.ms_per_image, s.params_m])
    return rows


def _why(pick, scores) -> str:
    best = max(scores, key=lambda s: s.logme)
    probe = "" if pick.probe_accuracy is None else f", quick test {pick.probe_accuracy:.0%}"
    if pick.backbone == best.backbone:
        reason = "its features fit your labels best"
    else:
        reason = (f"about as good as {best.title} on your pictures and "
                  f"{best.ms_per_image / pick.ms_per_image:.1f}× faster")  # fmt: skip
    return (f"**Chosen: {pick.title}** ({reason}; LogME {pick.logme:.3f}{probe}), from "
            f"{pick.pictures} of your training pictures. LogME compares backbones on the same "
            "pictures only: higher means a simple model on its features explains your labels "
            "better, which tends to mean a better model after training.")  # fmt: skip


def rank(ctx: Context, ws_id, progress=gr.Progress()):
    """Score each offline backbone in turn (the table grows as they come), then choose the best
    trade-off in the backbone list: (table, sentence, backbone choice)."""
    try:
        dataset = ctx.workspace(ws_id).dataset()
        load_engine()
        from ..transfer.rank import best_tradeoff, offline_backbones, score_each

        scores = []
        names = offline_backbones()
        progress((0, len(names)), desc="looking at your pictures")
        for done, total, score in score_each(dataset, names):
            scores.append(score)
            progress((done, total), desc=f"{score.title} done")
            yield _rows(scores), f"Ranked {done} of {total}...", gr.update()
    except StudioError as exc:
        raise gr.Error(as_text(exc), print_exception=False) from None
    pick = best_tradeoff(scores)
    yield _rows(scores, pick.backbone), _why(pick, scores), gr.update(value=pick.backbone)


def build_rank_panel(ctx: Context, ws_state: gr.State, backbone: gr.Dropdown) -> None:
    """The button, its Stop, the table and the sentence; the choice lands in ``backbone``."""
    gr.Markdown(HELP)
    with gr.Row():
        go = gr.Button("Rank backbones for my pictures", elem_id="rank-go", scale=0)
        stop = gr.Button("Stop", variant="stop", size="sm", elem_id="rank-stop", scale=0)
    said = gr.Markdown(elem_id="rank-said")
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="rank-table",
                         label="Backbones on your pictures, best fit first")  # fmt: skip
    ranking = go.click(functools.partial(rank, ctx), ws_state, [table, said, backbone])
    stop.click(None, None, None, cancels=[ranking])
