"""Paged galleries: a page of pictures at a time, never thousands sent to the browser at once.

A class of 5,000 pictures, or a confusion-matrix cell holding most of a large test split, would
otherwise be thousands of images in one message and one page: the browser tab slows to a crawl
or dies (Teachable Machine's most-repeated complaint). A :class:`Pager` is a gallery with
Previous / Next buttons, a page number and a line saying where the page is; a handler returns
:func:`page_of`'s three values for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gradio as gr

__all__ = ["PAGE_SIZE", "Pager", "page_of", "build_pager", "bind_pager"]

PAGE_SIZE = 48  # pictures a page: eight rows of six, a few hundred KB of thumbnails


def page_of(
    items: Sequence, page: float | None = 1, size: int = PAGE_SIZE
) -> tuple[list, int, str]:
    """``(the items on page, the page's number, "page 2 of 9 (412 pictures)")``; a page number
    outside the range shows the nearest page."""
    pages = max(1, math.ceil(len(items) / size))
    number = min(max(1, int(page or 1)), pages)
    shown = list(items[(number - 1) * size : number * size])
    where = f"page {number} of {pages} ({len(items)} picture{'s' if len(items) != 1 else ''})"
    return shown, number, where if len(items) > size else ""


@dataclass
class Pager:
    """A gallery and the controls that turn its pages."""

    gallery: gr.Gallery
    number: gr.Number
    where: gr.Markdown
    previous: gr.Button
    next: gr.Button

    @property
    def outputs(self) -> list:
        """What a handler fills, in :func:`page_of`'s order."""
        return [self.gallery, self.number, self.where]


def build_pager(elem_id: str, **gallery: object) -> Pager:
    """A gallery (``gallery`` are gr.Gallery's arguments) with its page controls below it;
    the controls' ids are ``elem_id`` followed by -previous, -next, -page and -where."""
    shown = gr.Gallery(elem_id=elem_id, **gallery)
    with gr.Row(equal_height=True):
        previous = gr.Button("◀ Previous", size="sm", scale=0, elem_id=f"{elem_id}-previous")
        number = gr.Number(value=1, precision=0, minimum=1, show_label=False, scale=0,
                           min_width=80, elem_id=f"{elem_id}-page")  # fmt: skip
        following = gr.Button("Next ▶", size="sm", scale=0, elem_id=f"{elem_id}-next")
        where = gr.Markdown(elem_id=f"{elem_id}-where")
    return Pager(shown, number, where, previous, following)


def bind_pager(pager: Pager, show: Callable, inputs: list) -> None:
    """Wire the controls: ``show(*inputs, page)`` returns :func:`page_of`'s three values (it
    is the same function the gallery's first page comes from)."""

    def turn(step: int) -> Callable:
        return lambda *values: show(*values[:-1], (values[-1] or 1) + step)

    pager.previous.click(turn(-1), [*inputs, pager.number], pager.outputs)
    pager.next.click(turn(1), [*inputs, pager.number], pager.outputs)
    pager.number.submit(turn(0), [*inputs, pager.number], pager.outputs)
