"""What every tab shares: the session's workspace, friendly errors, run pickers."""

from __future__ import annotations

import functools
import html
import logging
import threading
import time
import typing
from pathlib import Path

import gradio as gr

from ..errors import StudioError
from ..jobs import JobRegistry
from ..owners import Owners
from ..runs import HISTORY, METRICS, WEIGHTS, load_json
from ..workspace import Workspace

__all__ = [
    "Context",
    "ExplainerCache",
    "IMAGENET",
    "as_text",
    "friendly",
    "load_engine",
    "run_choices",
    "run_metrics",
    "run_picker",
    "stop_job",
    "start_job",
    "claim_and_start",
    "follow_job",
    "job_status",
]

IMAGENET = "imagenet:"  # a model choice that is a catalog backbone with its ImageNet classes

log = logging.getLogger("studio.ui")


class Context:
    """App-wide settings and the sessions' jobs (by workspace and kind: studio.jobs)."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.jobs = JobRegistry()
        self.explainers = ExplainerCache()
        self.owners = Owners(self.base)
        self._warmed = False
        self._chosen: dict[tuple, str] = {}  # (workspace, picker) -> run

    def choose_run(self, ws_id, picker: str, name: str) -> None:
        """Have the next refresh of the run list ``picker`` (its elem_id) show run ``name``.

        A button that opens another tab with a run chosen there ("Export this variant") sets
        that tab's list; but opening a tab also refreshes its list, which picks the newest run,
        and that refresh comes after: without this, the tab showed the chosen run for a moment
        and then built the download of another one. The choice holds until that refresh,
        however late it comes on a busy machine (no clock decides it)."""
        self._chosen[(ws_id, picker)] = name

    def chosen_run(self, ws_id, picker: str) -> str | None:
        """The run :meth:`choose_run` asked ``picker`` to show (once), or None."""
        return self._chosen.pop((ws_id, picker), None)

    def warm_up(self) -> None:
        """Load the engine's heavy half (torch, timm, scikit-learn) in the background once a
        page is open, so the server answers first and the first button press is still quick."""
        if self._warmed:
            return
        self._warmed = True

        threading.Thread(target=load_engine, name="studio-warm-up", daemon=True).start()

    @property
    def private_dir(self):
        """Files the app needs but never serves (blocked even though it is inside the base)."""
        path = self.base / ".private"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def browser_secret(self) -> str:
        """Gradio's BrowserState encrypts what it keeps in the browser with this; it is sent to
        every page, so it protects nothing: what opens a workspace is the key the browser
        keeps, checked on the server (:class:`studio.owners.Owners`). Stable, so a restarted
        app can still read the keys browsers hold."""
        path = self.private_dir / "browser-secret"
        if not path.exists():
            import secrets

            path.write_text(secrets.token_hex(16))
            path.chmod(0o600)
        return path.read_text().strip()

    def workspace(self, workspace_id: str | None) -> Workspace:
        """The session's workspace; the id comes from the session's server-side state only."""
        if not workspace_id:
            raise StudioError("the page is still starting; try again in a moment")
        return Workspace(self.base, workspace_id)

    def open(self, key: str | None) -> tuple[str, Workspace]:
        """``(key, workspace)`` for the key a browser holds (a new pair for a new browser)."""
        return self.owners.open(key)


class ExplainerCache:
    """Loaded explainers shared by the tabs (two at most), each with a lock: Captum hooks into
    the model while it works, so two maps must not be computed on one model at once."""

    def __init__(self):
        self._items: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def get(self, ws: Workspace, source: str):
        """``(Explainer, lock)`` for a run name in ``ws`` or ``IMAGENET + backbone name``."""
        load_engine()
        from ..inspection.explain import Explainer

        if not source:
            raise StudioError("train a model first (Train tab), or pick an ImageNet model")
        imagenet = source.startswith(IMAGENET)
        key = source if imagenet else str(ws.resolve_run(source))
        with self._lock:
            if key not in self._items:
                if len(self._items) >= 2:
                    self._items.pop(next(iter(self._items)))
                explainer = (
                    Explainer.from_backbone(source.removeprefix(IMAGENET))
                    if imagenet
                    else Explainer.from_run(key)
                )
                self._items[key] = (explainer, threading.Lock())
            return self._items[key]


_ENGINE_LOCK = threading.Lock()


def load_engine() -> None:
    """Import the engine's torch side (torch, timm, scikit-learn), one thread at a time.

    The app starts without it so the page answers quickly. timm's package imports are circular,
    and two threads importing it at once fail with "partially initialized module", so every
    handler that needs the engine calls this first instead of importing directly.
    """
    with _ENGINE_LOCK:
        import importlib

        for name in (
            "studio.training.train",
            "studio.deployment.predict",
            "studio.deployment.export",
        ):
            importlib.import_module(name)


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]()#|!~"})


def as_text(value: object) -> str:
    """``value`` shown as the very characters it holds in Markdown and toasts: a file called
    ``<b>x</b>.jpg`` from someone's zip is a name to show, not markup to render (or to strip,
    which cut messages short)."""
    return html.escape(str(value), quote=False).translate(_MARKDOWN)


def friendly(fn):
    """Turn engine errors into a readable message in the page instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudioError as exc:
            raise gr.Error(as_text(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - the page must keep working
            log.exception("unexpected error in %s", getattr(fn, "__name__", fn))
            raise gr.Error(as_text(f"Something went wrong: {type(exc).__name__}: {exc}")) from None

    if isinstance(fn, functools.partial):
        # A handler bound to the app's context: Gradio finds gr.SelectData / gr.Progress
        # parameters by their type hints, which a partial does not carry.
        wrapper.__annotations__ = typing.get_type_hints(fn.func)
    return wrapper


def run_metrics(ws: Workspace, name: str) -> dict:
    """A finished run's ``metrics.json``."""
    return load_json(ws.resolve_run(name) / METRICS)


def history_rows(run_dir: Path) -> list[dict]:
    """A run's epochs as ``history.csv`` holds them (none yet: an empty list)."""
    import csv

    path = run_dir / HISTORY
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def offer_runs(names: list[str]) -> tuple:
    """A dropdown of ``names`` (the first chosen) and its button, both shown only when there
    are any: how a tab offers the stopped runs it can continue."""
    return (
        gr.update(choices=names, value=names[0] if names else None, visible=bool(names)),
        gr.update(visible=bool(names)),
    )


def run_choices(ws: Workspace) -> list[str]:
    """Finished runs, newest first, by folder name."""
    return [p.name for p in ws.runs() if (p / WEIGHTS).exists()]


def run_picker(ctx: Context, ws_state: gr.State, info: str, elem_id: str):
    """A 'Run' dropdown with a refresh button; returns ``(dropdown, refresh(ws_id))``.

    ``refresh`` selects the newest finished run (or the one another tab chose for it:
    :meth:`Context.choose_run`); tabs call it when they are opened.
    """
    with gr.Row():
        run = gr.Dropdown(choices=[], label="Run", info=info, elem_id=elem_id, scale=3)
        button = gr.Button("Refresh list", scale=0)

    def refresh(ws_id):
        choices = run_choices(ctx.workspace(ws_id))
        wanted = ctx.chosen_run(ws_id, elem_id)
        value = wanted if wanted in choices else (choices[0] if choices else None)
        return gr.update(choices=choices, value=value)

    button.click(refresh, ws_state, run)
    return run, refresh


def stop_job(ctx: Context, ws_id, kind: str) -> str:
    """Ask the workspace's job of ``kind`` to stop; what happens next, in words (also a toast)."""
    job = ctx.jobs.get(ws_id, kind)
    if job is None or job.done:
        said = f"Nothing is running ({kind})."
    else:
        waiting = not hasattr(job, "snapshot") or job.snapshot().state == "queued"
        job.stop()
        said = (
            "Cancelled: it had not started yet."
            if waiting
            else "Stopping after this step; the best model so far is kept."
        )
    gr.Info(said)
    return said


def start_job(ctx: Context, ws_id, kind: str, make_stream, planned_epochs: int = 0):
    """Claim the workspace's slot for ``kind``, then start ``make_stream()``'s event stream as
    a :class:`~studio.jobs.Job` in it; a refusal (one job of a kind per workspace, bad
    settings) is a plain message in the page."""

    def make():
        load_engine()
        from ..jobs import Job

        return Job(kind, make_stream(), planned_epochs).start()

    return claim_and_start(ctx, ws_id, kind, make)


def claim_and_start(ctx: Context, ws_id, kind: str, make_job):
    """Claim the workspace's slot for ``kind`` (before the seconds of set-up, so a double
    click cannot start two), then put ``make_job()``'s started job in it; only a failed
    set-up gives the slot back, and a refusal is a plain message in the page."""
    try:
        ctx.jobs.claim(ws_id, kind)
    except StudioError as exc:
        raise gr.Error(as_text(exc), print_exception=False) from None
    try:
        job = make_job()
    except StudioError as exc:
        ctx.jobs.release(ws_id, kind)
        raise gr.Error(as_text(exc), print_exception=False) from None
    except BaseException:
        ctx.jobs.release(ws_id, kind)
        raise
    ctx.jobs.hand_over(ws_id, kind, job)
    return job


def follow_job(job, status, curves_name: str, extra_outputs: int,
               earlier: list[dict] | None = None):  # fmt: skip
    """Yield ``(status text, training curves, *no change)`` while ``job`` runs: the text when
    it changes, the curves only when an epoch was added (after ``earlier``: the epochs a
    continued run had run; a chart sent twice a second with every batch's text is redrawn by
    the browser each time, on the same cores as the training); returns the last snapshot (a
    failure is a plain message)."""
    from ..inspection import charts

    said, shown, earlier = "", -1, earlier or []
    while not job.done:
        snap = job.snapshot()
        text = status(snap)
        if text != said or len(snap.epochs) != shown:
            curves = gr.update()
            if len(snap.epochs) != shown:
                shown = len(snap.epochs)
                epochs = earlier + [e.to_dict() for e in snap.epochs]
                curves = charts.training_curves({curves_name: epochs}) if epochs else curves
            said = text
            yield text, curves, *[gr.update()] * extra_outputs
        time.sleep(0.5)
    snap = job.snapshot()
    if snap.state == "failed":
        raise gr.Error(as_text(snap.message), print_exception=False)
    return snap


def job_status(snap, while_training: str = "") -> str:
    """A job's state in bold: its last note before the first epoch, then its message (with
    ``while_training`` said beside it while epochs run)."""
    text = f"**{as_text(snap.message)}.**"
    if snap.state == "training" and not snap.epochs and snap.notices:
        text = f"**{as_text(snap.notices[-1][:1].upper() + snap.notices[-1][1:])}...**"
    elif snap.epochs and snap.state == "training" and while_training:
        text += " " + while_training
    return text
