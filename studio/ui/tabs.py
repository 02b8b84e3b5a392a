"""The tab contract: what a tab gives the app.

A tab is a module with a ``build_*_tab(ctx, ws_state, tab, built)`` function that lays out its
components inside ``tab`` (its ``gr.Tab``) and returns a :class:`TabParts`: the components its
``refresh`` fills (``views``), when the app should refresh them, the components other tabs may wire to
(``exposes``), and an optional ``wire`` step that runs once every tab is built (for a button on
one tab that opens another). ``built`` holds the parts of the tabs built before it, by id.

Adding a tab is one new module and one line in :data:`studio.ui.app.TABS`; ``build_app`` loops
over that list and knows no tab by name.

Inside a tab module, as in Gradio's own demos: the handlers are module-level functions that
take the app's :class:`~studio.ui.common.Context` first (``show_run(ctx, ws_id, name)``), call
the engine and return the components' new values, so a test calls them without a browser; the
builder lays out components (in small functions returning them by name) and binds each handler
with ``friendly(functools.partial(handler, ctx))``. No ML logic lives in a tab.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

__all__ = ["TabParts", "TabSpec", "as_values"]


@dataclass
class TabParts:
    """What one built tab gives the app.

    Attributes:
        views: Components that ``refresh`` returns values for, in order.
        refresh: ``refresh(*inputs) -> value or tuple`` re-reads what the views show; the inputs
            are ``refresh_inputs`` (the workspace id by default).
        refresh_inputs: Components whose values ``refresh`` takes; None means ``[ws_state]``.
        on_open: Refresh when a browser opens its workspace (called with the workspace id).
        on_select: Refresh each time the tab is opened (lists of runs go stale).
        on_load: Refresh once per page load on its own, without the workspace (for a slow
            refresh that must not hold up the others: the catalog loads torch on a first start).
        exposes: Components other tabs wire to, by name.
        wire: ``wire(tabs, built)`` runs after every tab exists, for links between tabs.
    """

    views: list = field(default_factory=list)
    refresh: Callable[..., Any] | None = None
    refresh_inputs: list | None = None
    on_open: bool = True
    on_select: bool = True
    on_load: bool = False
    exposes: dict[str, Any] = field(default_factory=dict)
    wire: Callable[[gr.Tabs, dict[str, TabParts]], None] | None = None


@dataclass(frozen=True)
class TabSpec:
    """One tab in the app: its title, its id (for ``gr.Tabs(selected=...)``), its builder."""

    title: str
    id: str
    build: Callable[[Any, gr.State, gr.Tab, dict[str, TabParts]], TabParts]


def as_values(result: Any, views: list) -> tuple:
    """A refresh's result as a tuple with one value per view (one view may return one value)."""
    values = result if isinstance(result, tuple) else (result,)
    if len(values) != len(views):
        raise ValueError(f"refresh returned {len(values)} values for {len(views)} views")
    return values
