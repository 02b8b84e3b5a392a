"""Why did the model say that? One object that explains pictures for a run or an ImageNet model.

:class:`Explainer` ties a model to its preprocessing and class names and calls the two modules
below it: :mod:`studio.inspection.attribution` (Captum maps, overlays) and :mod:`studio.inspection.trust`
(faithfulness, sanity check, shortcut report). Their public names are re-exported here, so
``studio.inspection.explain`` is the one import the app, the CLI and notebooks need.

>>> explainer = Explainer.from_run("runs/demo")  # doctest: +SKIP
>>> result = explainer.explain("cat.jpg", ["gradcam", "ig"])  # doctest: +SKIP
>>> overlay(result.image, result.maps["gradcam"], sign="positive").save("map.png")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.tasks import Tasks
from ..errors import DataError, StudioError
from .attribution import (
    METHODS,
    SIGNS,
    ExplainStopped,
    Method,
    attribute,
    find_cam_layer,
    method_key,
    normalize,
    overlay,
    ready_for_attribution,
)
from .evaluate import probabilities
from .trust import (
    Faithfulness,
    SanityCheck,
    ShortcutRow,
    faithfulness,
    faithfulness_verdict,
    random_map,
    randomization_check,
    region_shares,
    shortcut_report,
)

__all__ = [
    "METHODS",
    "SIGNS",
    "Method",
    "ExplainStopped",
    "attribute",
    "find_cam_layer",
    "normalize",
    "overlay",
    "faithfulness",
    "Faithfulness",
    "faithfulness_verdict",
    "random_map",
    "randomization_check",
    "SanityCheck",
    "region_shares",
    "shortcut_report",
    "ShortcutRow",
    "Explainer",
    "Explanation",
    "evaluation_samples",
]


def evaluation_samples(run_dir: str | Path) -> list[tuple[str, str]]:
    """``(picture, true class)`` for the pictures a run was evaluated on (from metrics.json)."""
    from ..runs import METRICS, load_json, require_run

    metrics = load_json(require_run(run_dir) / METRICS)
    rows = metrics.get("predictions") or []
    if metrics.get("task") in ("multilabel", "multitask") or not rows:
        raise StudioError("this check needs a single-label run with evaluated pictures")
    return [(row["path"], row["true"]) for row in rows]


# --------------------------------------------------------------------------- explainer


@dataclass
class Explanation:
    """Maps for one picture: what the model saw, what it said, and what was explained."""

    image: Image.Image  # the picture as the model saw it (resized, cropped)
    input: torch.Tensor  # 1 x 3 x H x W, normalised
    top: list[tuple[str, float]]
    target: int
    target_label: str
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # method -> why it has no map


class Explainer:
    """A model plus how to feed it: loads once, explains many pictures.

    Build it from a trained run (:meth:`from_run`) or from any catalog backbone with its
    ImageNet head (:meth:`from_backbone`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        labels: Sequence[str],
        data_cfg: dict,
        multilabel: bool = False,
        device: str | torch.device = "cpu",
        tasks: Tasks | None = None,
    ):
        from ..data.loaders import build_transform

        self.device = torch.device(device)
        self.model = ready_for_attribution(model).to(self.device)
        self.labels = list(labels)
        self.multilabel = multilabel
        self.tasks = tasks  # a multi-task run: each task's probabilities are its own
        self.mean = torch.tensor(data_cfg["mean"]).view(3, 1, 1)
        self.std = torch.tensor(data_cfg["std"]).view(3, 1, 1)
        self._transform = build_transform(data_cfg, "none")
        self.input_size = tuple(data_cfg["input_size"][-2:])
        self._layer: torch.nn.Module | None = None
        self._layer_problem: str | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> Explainer:
        from ..models.kinds import load_run

        run = load_run(run_dir)
        run.kind.require(
            "explaining with attribution maps (they need gradients)",
            run.kind.gradients,
            parent=run.record.get("parent"),
        )
        return cls(run.model, run.labels, run.data_config(), run.multilabel, device, run.tasks)

    @classmethod
    def from_backbone(
        cls, name: str, weights_file: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> Explainer:
        """A catalog backbone with its ImageNet classifier (pretrained weights required)."""
        from timm.data import ImageNetInfo

        from ..models.backbones import create_backbone, data_config

        model, _ = create_backbone(name, None, weights_file=weights_file)
        info = ImageNetInfo()
        labels = [info.index_to_description(i) for i in range(model.num_classes)]
        return cls(model, labels, data_config(model), device=device)

    @classmethod
    def load(cls, source: str | Path) -> Explainer:
        """A run folder, or a catalog backbone name for its ImageNet classes."""
        from ..models.backbones import CATALOG

        if str(source) in CATALOG and not Path(source).is_dir():
            return cls.from_backbone(str(source))
        return cls.from_run(source)

    # -- pictures ---------------------------------------------------------------------------

    def prepare(self, image: str | Path | Image.Image) -> tuple[torch.Tensor, Image.Image]:
        """The model's input for a picture and that input shown as a picture."""
        from ..data.images import ImageProblem
        from ..data.loaders import prepared

        if isinstance(image, Image.Image):
            x = self._transform(image.convert("RGB")).unsqueeze(0)
        else:
            try:
                x = prepared(image, self._transform).unsqueeze(0)
            except ImageProblem as exc:
                raise DataError(f"cannot read {Path(image).name}: {exc}") from None
        shown = (x[0] * self.std + self.mean).clamp(0, 1)
        return x.to(self.device), Image.fromarray(
            (shown.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        )

    @torch.no_grad()
    def predict(self, x: torch.Tensor, top_k: int = 5) -> list[tuple[str, float]]:
        probs = probabilities(self.model(x), self.multilabel, self.tasks)[0]
        values, indices = probs.topk(min(top_k, len(self.labels)))
        return [(self.labels[i], float(v)) for v, i in zip(values, indices)]

    def target_index(self, target: str | int | None, predicted: str) -> int:
        """``None``/"predicted" -> the top class; a label or index -> that class."""
        if target is None or target == "" or target == "predicted":
            return self.labels.index(predicted)
        if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
            index = int(target)
            if 0 <= index < len(self.labels):
                return index
        elif target in self.labels:
            return self.labels.index(target)
        else:
            folded = [i for i, label in enumerate(self.labels) if label.lower() == target.lower()]
            if len(folded) == 1:
                return folded[0]
        shown = ", ".join(self.labels[:10]) + (" ..." if len(self.labels) > 10 else "")
        raise StudioError(f"unknown class '{target}': the model knows {shown}")

    def cam_layer(self) -> torch.nn.Module:
        """The Grad-CAM layer, found once (or the reason there is none, remembered)."""
        if self._layer is None and self._layer_problem is None:
            try:
                self._layer = find_cam_layer(self.model, self.input_size)[1]
            except StudioError as exc:
                self._layer_problem = str(exc)
        if self._layer is None:
            raise StudioError(self._layer_problem)
        return self._layer

    # -- maps -------------------------------------------------------------------------------

    def _options(self, method: str, options: dict) -> dict:
        options = dict(options)
        if METHODS[method].needs_layer:
            options["layer"] = self.cam_layer()
        if not METHODS[method].smoothgrad:
            options.pop("smoothgrad", None)
        return options

    def explain(
        self,
        image: str | Path | Image.Image,
        methods: Sequence[str],
        target: str | int | None = None,
        *,
        progress: Callable[[float, str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **options,
    ) -> Explanation:
        """Maps from several methods for one picture (a method that cannot run says why).

        Args:
            target: ``None`` for the predicted class, or a class name / index.
            progress: Called with ``(fraction of all methods done, method title)``.
            **options: Passed to :func:`attribute`.
        """
        keys = [method_key(m) for m in methods]
        if not keys:
            raise StudioError("choose at least one method")
        x, shown = self.prepare(image)
        top = self.predict(x)
        index = self.target_index(target, top[0][0])
        result = Explanation(shown, x, top, index, self.labels[index])
        for n, key in enumerate(keys):
            report = None
            if progress is not None:
                title = METHODS[key].title
                report = lambda f, n=n, title=title: progress((n + f) / len(keys), title)  # noqa: E731
            start = time.perf_counter()
            try:
                result.maps[key] = attribute(
                    self.model,
                    x,
                    key,
                    index,
                    progress=report,
                    should_stop=should_stop,
                    **self._options(key, options),
                )
            except ExplainStopped:
                raise
            except StudioError as exc:
                result.problems[key] = str(exc)
            result.seconds[key] = time.perf_counter() - start
        return result

    def faithfulness(
        self, result: Explanation, include_random: bool = True
    ) -> dict[str, Faithfulness]:
        """Deletion/insertion for each map of ``result``; ``"random"`` is the floor to beat."""
        maps = dict(result.maps)
        if include_random:
            maps["random"] = random_map(tuple(result.input.shape[-2:]))
        return {
            key: faithfulness(
                self.model,
                result.input,
                values,
                result.target,
                multilabel=self.multilabel,
                tasks=self.tasks,
            )
            for key, values in maps.items()
        }

    def sanity(
        self,
        result: Explanation,
        method: str,
        progress: Callable[[float], None] | None = None,
        **options,
    ) -> SanityCheck:
        """:func:`randomization_check` for ``result``'s picture and class."""
        key = method_key(method)
        return randomization_check(
            self.model,
            result.input,
            key,
            result.target,
            progress=progress,
            **self._options(key, options),
        )

    def usable(self, method: str) -> str:
        """``method``, or Saliency when it needs a feature map the model lacks (a ViT)."""
        key = method_key(method)
        if METHODS[key].needs_layer:
            try:
                self.cam_layer()
            except StudioError:
                return "saliency"  # no feature map, but gradients still work
        return key

    def overlays(
        self,
        items: Sequence[tuple[str | Path, str]],
        *,
        method: str = "gradcam",
        sign: str = "positive",
        opacity: float = 0.6,
        progress: Callable[[float], None] | None = None,
    ) -> list[tuple[Image.Image | None, str]]:
        """A map for each ``(picture, class)``: a quick look at many pictures at once.

        Returns ``(overlay, note)`` per item; an unreadable picture gets ``None`` and the reason.
        """
        key = self.usable(method)
        out: list[tuple[Image.Image | None, str]] = []
        for i, (path, label) in enumerate(items):
            try:
                result = self.explain(path, [key], label)
                out.append(
                    (overlay(result.image, result.maps[key], sign, opacity), METHODS[key].title)
                )
            except ExplainStopped:
                raise
            except StudioError as exc:
                out.append((None, str(exc)))
            if progress is not None:
                progress((i + 1) / len(items))
        return out

    def shortcuts(
        self,
        samples: Sequence[tuple[str | Path, str]],
        *,
        method: str = "gradcam",
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[list[ShortcutRow], list[str]]:
        """:func:`shortcut_report` over picture files; also returns the files it could not read."""
        key = self.usable(method)
        prepared, skipped = [], []
        for path, label in samples:
            try:
                prepared.append((self.prepare(path)[0], self.target_index(label, label)))
            except StudioError:
                skipped.append(str(path))
        if not prepared:
            raise StudioError("no readable pictures to check")
        rows = shortcut_report(
            self.model,
            prepared,
            self.labels,
            method=key,
            progress=progress,
            should_stop=should_stop,
            **self._options(key, {}),
        )
        return rows, skipped
