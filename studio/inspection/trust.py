"""How far to trust an attribution map: the checks a person needs before believing one.

* :func:`faithfulness` — deletion and insertion curves (Petsiuk et al., RISE 2018): remove or
  reveal the most-attributed pixels first and watch the class probability. Captum ships
  infidelity/sensitivity, not these curves, so the ~30 lines live here.
* :func:`randomization_check` — the model-parameter randomization test (Adebayo et al., "Sanity
  Checks for Saliency Maps", 2018): a map that looks the same for a model with random weights
  shows the picture's edges, not what the model learnt.
* :func:`shortcut_report` — how much of each class's attribution sits on the picture's border or
  in one corner (backgrounds, frames, watermarks) instead of the centre.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.tasks import Tasks
from ..errors import StudioError
from ..rng import seeded
from .attribution import (
    METHODS,
    ExplainStopped,
    attribute,
    method_key,
    model_blocks,
    ready_for_attribution,
)
from .evaluate import probabilities

__all__ = [
    "Faithfulness",
    "faithfulness",
    "faithfulness_verdict",
    "random_map",
    "SanityCheck",
    "randomization_check",
    "region_shares",
    "ShortcutRow",
    "shortcut_report",
]

# --------------------------------------------------------------------------- faithfulness


@dataclass
class Faithfulness:
    """Deletion and insertion curves for one map; ``score`` = insertion AUC - deletion AUC.

    A faithful map makes the probability fall fast when its top pixels are removed (low deletion
    AUC) and rise fast when only they are shown (high insertion AUC).
    """

    fractions: list[float]
    deletion: list[float]
    insertion: list[float]
    deletion_auc: float
    insertion_auc: float

    @property
    def score(self) -> float:
        return self.insertion_auc - self.deletion_auc

    def to_dict(self) -> dict:
        return {
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "score": self.score,
            "fractions": self.fractions,
            "deletion": self.deletion,
            "insertion": self.insertion,
        }


def _blur(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    sigma = max(x.shape[-1] / 20, 1.0)
    kernel = int(sigma * 4) | 1
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


@torch.no_grad()
def faithfulness(
    model: torch.nn.Module,
    image: torch.Tensor,
    values: np.ndarray,
    target: int,
    *,
    steps: int = 20,
    batch_size: int = 16,
    multilabel: bool = False,
    tasks: Tasks | None = None,
) -> Faithfulness:
    """Deletion and insertion curves for ``values`` (most positive pixels first).

    Deletion replaces pixels with zeros (the mean colour); insertion starts from a blurred copy,
    so the model sees a natural-looking picture rather than a flat one (as in RISE).
    """
    from sklearn.metrics import auc

    x = image.detach().float().reshape(1, *image.shape[-3:])
    height, width = x.shape[-2:]
    if np.shape(values) != (height, width):
        raise StudioError(f"the map is {np.shape(values)}, the picture {height} x {width}")
    order = torch.from_numpy(np.argsort(-np.asarray(values).ravel(), kind="stable").copy())
    fractions = [i / steps for i in range(steps + 1)]
    ranks = torch.empty(height * width, dtype=torch.long)
    ranks[order] = torch.arange(height * width)
    ranks = ranks.reshape(1, 1, height, width).to(x.device)
    blurred = _blur(x)
    zeros = torch.zeros_like(x)
    curves: dict[str, list[float]] = {"deletion": [], "insertion": []}
    model = ready_for_attribution(model)
    for kind, (first, second) in {"deletion": (zeros, x), "insertion": (x, blurred)}.items():
        # Pixels ranked below the cut come from `first`, the rest from `second`.
        batch = torch.cat(
            [torch.where(ranks < f * height * width, first, second) for f in fractions]
        )
        for chunk in batch.split(batch_size):
            chunk = chunk.contiguous(memory_format=torch.channels_last)  # faster convolutions
            probs = probabilities(model(chunk), multilabel, tasks)[:, target]
            curves[kind].extend(float(p) for p in probs)
    return Faithfulness(
        fractions,
        curves["deletion"],
        curves["insertion"],
        float(auc(fractions, curves["deletion"])),
        float(auc(fractions, curves["insertion"])),
    )


def faithfulness_verdict(score: Faithfulness, floor: Faithfulness, margin: float = 0.03) -> str:
    """Plain words for a map's curves against the random map's.

    Each curve favours a different kind of map: deletion rewards scattered pixels (removing
    them quickly looks strange to the model), insertion rewards smooth regions. So a method is
    judged on each curve separately instead of on one number.
    """
    deletion = score.deletion_auc < floor.deletion_auc - margin
    insertion = score.insertion_auc > floor.insertion_auc + margin
    if deletion and insertion:
        return "faithful: beats a random map on both curves"
    if (deletion or insertion) and score.score <= floor.score + margin:
        # One curve is better, but the overall score shown beside it is not: the verdict may
        # never praise a map whose own numbers say it does no better than chance.
        which = "hiding its pixels" if deletion else "showing its pixels alone"
        return (
            f"no better than a random map overall ({score.score:.2f} against "
            f"{floor.score:.2f}), though {which} does better than chance: do not trust it here"
        )
    if deletion:
        return "partly: hiding its pixels hurts, but showing them alone is not enough"
    if insertion:
        return "partly: its region alone convinces the model, but hiding it does not hurt"
    return "no better than a random map here: do not trust it for this picture"


def random_map(shape: tuple[int, int], seed: int = 0, patch: int = 16) -> np.ndarray:
    """A map with no information, in patches like a real map: the floor a method must beat."""
    rng = np.random.default_rng(seed)
    rows, cols = -(-shape[0] // patch), -(-shape[1] // patch)
    coarse = rng.random((rows, cols), dtype=np.float32)
    return np.kron(coarse, np.ones((patch, patch), np.float32))[: shape[0], : shape[1]]


# --------------------------------------------------------------------------- sanity check


@dataclass
class SanityCheck:
    """Similarity of maps as more and more of the model is replaced by random weights."""

    method: str
    steps: list[tuple[str, float]]  # (what is randomised, Spearman similarity to the real map)
    repeat_similarity: float  # the same model, the method run again with another seed

    @property
    def final(self) -> float:
        return self.steps[-1][1]

    @property
    def passed(self) -> bool:
        return self.final < 0.3

    @property
    def verdict(self) -> str:
        title = METHODS[self.method].title
        if self.passed:
            return (
                f"Passed: with random weights the {title} map changes completely (similarity "
                f"{self.final:.2f}), so it really shows what this model has learnt."
            )
        if self.final < 0.6:
            return (
                f"Partly: with random weights the {title} map still keeps some of its shape "
                f"(similarity {self.final:.2f}). Part of it follows the picture's edges rather "
                "than the model; trust the broad areas, not the fine detail."
            )
        return (
            f"Failed: the {title} map looks much the same for a model with random weights "
            f"(similarity {self.final:.2f}). It mostly shows edges and contrast in the picture, "
            "not the model's reasoning; do not trust it for this model."
        )

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "steps": [{"randomised": k, "similarity": v} for k, v in self.steps],
            "repeat_similarity": self.repeat_similarity,
            "passed": self.passed,
            "verdict": self.verdict,
        }


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of absolute maps, as in Adebayo et al."""
    from scipy.stats import spearmanr

    a, b = np.abs(a).ravel(), np.abs(b).ravel()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def _layer_blocks(model: torch.nn.Module) -> list[tuple[str, list[torch.nn.Module]]]:
    """Blocks with weights, from output to input: the order the sanity check randomises them."""
    blocks = [(name, [m for _, m in modules]) for name, modules in model_blocks(model)]
    return [b for b in reversed(blocks) if any(True for m in b[1] for _ in m.parameters())]


def _randomise(modules: Sequence[torch.nn.Module]) -> None:
    for top in modules:
        for module in top.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for name, param in top.named_parameters():
            # Parameters no reset_parameters covers (ViT position embeddings, layer scales).
            if "embed" in name or "token" in name or name.endswith("gamma"):
                torch.nn.init.normal_(param, std=0.02)


def randomization_check(
    model: torch.nn.Module,
    image: torch.Tensor,
    method: str,
    target: int,
    *,
    points: int = 4,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    **options,
) -> SanityCheck:
    """Randomise the model from the head down and compare each map with the trained one.

    Args:
        points: How many cumulative randomisation depths to try (the last is the whole model).
        **options: Passed to :func:`attribute` (``smoothgrad``, ``steps``...).
    """
    key = method_key(method)
    reference = attribute(model, image, key, target, seed=seed, **options)
    stochastic = key == "gradshap" or options.get("smoothgrad")
    repeat = (
        _similarity(reference, attribute(model, image, key, target, seed=seed + 1, **options))
        if stochastic
        else 1.0
    )
    shuffled = copy.deepcopy(model)
    if options.get("layer") is not None:  # the same layer, in the copy
        names = {id(m): n for n, m in model.named_modules()}
        options["layer"] = dict(shuffled.named_modules())[names[id(options["layer"])]]
    blocks = _layer_blocks(shuffled)
    depths = sorted({round(len(blocks) * (i + 1) / points) for i in range(points)} - {0})
    steps: list[tuple[str, float]] = []
    done = 0
    with seeded(seed):
        for n, depth in enumerate(depths, start=1):
            _randomise([m for _, mods in blocks[done:depth] for m in mods])
            done = depth
            label = (
                "all layers"
                if depth == len(blocks)
                else f"the last {depth} of {len(blocks)} layers"
            )
            values = attribute(shuffled, image, key, target, seed=seed, **options)
            steps.append((label, _similarity(reference, values)))
            if progress is not None:
                progress(n / len(depths))
    return SanityCheck(key, steps, repeat)


# --------------------------------------------------------------------------- shortcuts


def region_shares(values: np.ndarray, border: float = 0.125, corner: float = 0.2) -> dict:
    """Share of the positive attribution on the border band and in the busiest corner.

    With attribution spread evenly, the border (``border`` of each side) holds
    ``1 - (1 - 2 * border) ** 2`` of it (44% by default) and each corner ``corner ** 2`` (4%).
    """
    positive = np.clip(np.asarray(values, np.float64), 0, None)
    total = positive.sum()
    height, width = positive.shape
    bh, bw = max(1, round(height * border)), max(1, round(width * border))
    ch, cw = max(1, round(height * corner)), max(1, round(width * corner))
    if total <= 0:
        return {"border": 0.0, "corner": 0.0, "corner_name": ""}
    centre = positive[bh : height - bh, bw : width - bw].sum()
    corners = {
        "top-left": positive[:ch, :cw].sum(),
        "top-right": positive[:ch, -cw:].sum(),
        "bottom-left": positive[-ch:, :cw].sum(),
        "bottom-right": positive[-ch:, -cw:].sum(),
    }
    busiest = max(corners, key=corners.get)
    return {
        "border": float(1 - centre / total),
        "corner": float(corners[busiest] / total),
        "corner_name": busiest,
    }


@dataclass
class ShortcutRow:
    """One class's verdict: does the model look at the object, or at the frame around it?"""

    label: str
    images: int
    border: float  # mean share of attribution on the border band
    corner: float  # mean share in the busiest corner
    corner_name: str
    flagged: bool
    message: str

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


BORDER_FLAG = 0.6  # the border is 44% of the picture; 60% of the evidence there is suspicious
CORNER_FLAG = 0.25  # a corner is 4% of the picture; a quarter of the evidence there is a mark


def _shortcut_message(label: str, border: float, corner: float, corner_name: str) -> str:
    if corner >= CORNER_FLAG:
        return (
            f"'{label}' seems to be recognised by something in the {corner_name} corner "
            f"({corner:.0%} of the evidence in 4% of the picture) — a watermark, logo or date "
            "stamp? Crop it away or add pictures of other classes with the same mark."
        )
    if border >= BORDER_FLAG:
        return (
            f"'{label}' seems to be recognised by its background or frame: {border:.0%} of the "
            "evidence lies on the edges of the picture. Add pictures of this class on other "
            "backgrounds, or crop closer to the object."
        )
    return f"'{label}': the model looks mostly at the middle of the picture ({1 - border:.0%})."


def shortcut_report(
    model: torch.nn.Module,
    samples: Sequence[tuple[torch.Tensor, int]],
    labels: Sequence[str],
    *,
    method: str = "gradcam",
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **options,
) -> list[ShortcutRow]:
    """Per class: where does the evidence lie, on average, in pictures of that class?

    Args:
        samples: ``(preprocessed picture, true class index)`` pairs, e.g. the validation set.
        method: Attribution method; Grad-CAM is fast and coarse, which suits a region check.
    """
    per_class: dict[int, list[dict]] = {}
    for i, (x, label) in enumerate(samples):
        if should_stop is not None and should_stop():
            raise ExplainStopped("stopped")
        values = attribute(model, x, method, int(label), **options)
        per_class.setdefault(int(label), []).append(region_shares(values))
        if progress is not None:
            progress((i + 1) / len(samples))
    rows = []
    for index in sorted(per_class):
        shares = per_class[index]
        border = float(np.mean([s["border"] for s in shares]))
        corner_names = [s["corner_name"] for s in shares if s["corner_name"]]
        corner_name = max(set(corner_names), key=corner_names.count) if corner_names else ""
        # Averaged over all pictures, counting only that one corner: a mark must sit in the same
        # corner in most pictures, not in a different one each time.
        corner = sum(s["corner"] for s in shares if s["corner_name"] == corner_name) / len(shares)
        flagged = border >= BORDER_FLAG or corner >= CORNER_FLAG
        label = labels[index]
        rows.append(
            ShortcutRow(
                label,
                len(shares),
                border,
                corner,
                corner_name,
                flagged,
                _shortcut_message(label, border, corner, corner_name),
            )
        )
    return rows
