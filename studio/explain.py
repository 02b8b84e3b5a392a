"""Why did the model say that? Captum attribution maps, and how far to trust them.

Every map comes from Captum (no attribution method is written here); this module chooses the
layer, baselines, batch sizes and strides, reduces the result to one ``H x W`` map at the model's
input resolution, and adds the checks a person needs before believing a heat map:

* :func:`faithfulness` — deletion and insertion curves (Petsiuk et al., RISE 2018): remove or
  reveal the most-attributed pixels first and watch the class probability. Captum ships
  infidelity/sensitivity, not these curves, so the ~30 lines live here.
* :func:`randomization_check` — the model-parameter randomization test (Adebayo et al., "Sanity
  Checks for Saliency Maps", 2018): a map that looks the same for a model with random weights
  shows the picture's edges, not what the model learnt.
* :func:`shortcut_report` — how much of each class's attribution sits on the picture's border or
  in one corner (backgrounds, frames, watermarks) instead of the centre.

>>> explainer = Explainer.from_run("runs/demo")  # doctest: +SKIP
>>> result = explainer.explain("cat.jpg", ["gradcam", "ig"])  # doctest: +SKIP
>>> overlay(result.image, result.maps["gradcam"], sign="positive").save("map.png")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import DataError, StudioError

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

SIGNS = ("positive", "negative", "absolute", "all")


@dataclass(frozen=True)
class Method:
    """One attribution method as the app and CLI present it."""

    key: str
    title: str
    about: str
    smoothgrad: bool  # SmoothGrad (NoiseTunnel) makes sense on top of it
    needs_layer: bool  # needs a convolutional feature map (Grad-CAM family)


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method(
            "gradcam",
            "Grad-CAM",
            "which regions of the last feature map drove the class; coarse but robust",
            False,
            True,
        ),
        Method(
            "ig",
            "Integrated Gradients",
            "sums gradients along a path from a plain picture to this one",
            True,
            False,
        ),
        Method(
            "saliency", "Saliency", "how strongly each pixel's change moves the score", True, False
        ),
        Method(
            "gradshap",
            "GradientSHAP",
            "Integrated Gradients averaged over random starting pictures (already noisy)",
            False,
            False,
        ),
        Method(
            "occlusion",
            "Occlusion",
            "covers one patch at a time and watches the score drop; slow but model-agnostic",
            False,
            False,
        ),
        Method(
            "guided-gradcam",
            "Guided Grad-CAM",
            "Grad-CAM sharpened with guided backpropagation (pixel detail)",
            False,
            True,
        ),
    )
}
_ALIASES = {
    "integrated-gradients": "ig",
    "integrated_gradients": "ig",
    "grad-cam": "gradcam",
    "gradientshap": "gradshap",
    "gradient-shap": "gradshap",
    "guided_gradcam": "guided-gradcam",
    "guidedgradcam": "guided-gradcam",
}


class ExplainStopped(StudioError):
    """The person pressed Stop while a map was being computed."""


def method_key(name: str) -> str:
    """The canonical key for a method name, or :class:`StudioError` listing the known ones."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in METHODS:
        raise StudioError(f"unknown method '{name}': choose from {', '.join(METHODS)}")
    return key


# --------------------------------------------------------------------------- the model


class _Watched(torch.nn.Module):
    """Counts the pictures the model sees, so slow methods can report progress and be stopped.

    A module (not a closure) because Guided Grad-CAM needs a module to hook its ReLUs into.
    """

    def __init__(self, model: torch.nn.Module, total: int, progress, should_stop):
        super().__init__()
        self.model = model
        self.total = max(total, 1)
        self.seen = 0
        self.progress = progress
        self.should_stop = should_stop

    def forward(self, x):
        if self.should_stop is not None and self.should_stop():
            raise ExplainStopped("stopped")
        out = self.model(x)
        self.seen += x.shape[0]
        if self.progress is not None:
            self.progress(min(self.seen / self.total, 1.0))
        return out


def _ready(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, and no in-place activations: Captum's backward hooks cannot wrap them."""
    model.eval()
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return model


def _candidate_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Input-to-output blocks to look for a feature map in: timm's groups, else the children."""
    names: list[str] = []
    if hasattr(model, "group_matcher"):
        from .backbones import model_groups

        for group in model_groups(model):
            names.extend(group.modules)
    else:
        names = [name for name, _ in model.named_children()]
    found = dict(model.named_modules())
    return [(n, found[n]) for n in names if n in found]


def find_cam_layer(
    model: torch.nn.Module, input_size: tuple[int, int]
) -> tuple[str, torch.nn.Module]:
    """The last block whose output is still a spatial feature map (``N x C x H x W``, H, W > 1).

    The blocks come from the backbone's groups (stem, stages, head), so no per-model table is
    needed; one probe forward records their output shapes.

    Raises:
        StudioError: The model has no such map (a Vision Transformer's blocks output tokens).
    """
    candidates = _candidate_modules(model)
    shapes: dict[str, tuple] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(
                name, tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            )
        )
        for name, module in candidates
    ]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    for name, module in reversed(candidates):
        shape = shapes.get(name, ())
        if len(shape) == 4 and shape[2] > 1 and shape[3] > 1:
            return name, module
    raise StudioError(
        "Grad-CAM needs a convolutional feature map and this model has none (a Vision "
        "Transformer works on patches): use Integrated Gradients, Saliency, GradientSHAP or "
        "Occlusion instead"
    )


# --------------------------------------------------------------------------- attribution


def _occlusion_window(side: int) -> tuple[int, int]:
    """Window about an eighth of the picture, moved by half a window: 15 x 15 steps at 224 px."""
    window = max(4, round(side / 8))
    return window, max(2, window // 2)


def _forward_count(key: str, side: int, steps: int, samples: int) -> int:
    if key == "ig":
        return steps
    if key == "gradshap":
        return samples
    if key == "occlusion":
        window, stride = _occlusion_window(side)
        return ((side - window) // stride + 1) ** 2 + 1
    return 2 if key == "guided-gradcam" else 1


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch and numpy (GradientSHAP draws from numpy's global generator), then put back
    the caller's random state, so explaining never changes what a later training run draws."""
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed)
            yield
    finally:
        np.random.set_state(numpy_state)


def attribute(
    model: torch.nn.Module,
    image: torch.Tensor,
    method: str,
    target: int,
    *,
    smoothgrad: bool = False,
    smoothgrad_samples: int = 8,
    noise: float = 0.15,
    steps: int = 50,
    samples: int = 16,
    baseline: torch.Tensor | None = None,
    layer: torch.nn.Module | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """One attribution map for one picture, at the picture's resolution.

    Args:
        model: Any classifier ``N x 3 x H x W -> N x classes`` (put in eval mode here).
        image: The preprocessed picture, ``3 x H x W`` or ``1 x 3 x H x W``.
        method: A key of :data:`METHODS` (``gradcam``, ``ig``, ``saliency``, ``gradshap``,
            ``occlusion``, ``guided-gradcam``).
        target: Index of the class to explain.
        smoothgrad: Average the method over noisy copies (Captum's ``NoiseTunnel``); gradient
            methods only.
        smoothgrad_samples: Noisy copies for SmoothGrad.
        noise: SmoothGrad / GradientSHAP noise, as a fraction of the picture's value range.
        steps: Integrated Gradients path steps.
        samples: GradientSHAP samples.
        baseline: The "nothing here" picture for IG, GradientSHAP and Occlusion (same shape as
            ``image``); zeros, i.e. the normalisation mean colour, by default.
        layer: Grad-CAM layer; found with :func:`find_cam_layer` when not given.
        batch_size: Pictures per forward pass for IG, SmoothGrad and Occlusion (bounds memory).
        seed: Seeds the random parts (SmoothGrad noise, GradientSHAP baselines).
        progress: Called with the fraction done (0..1) as the model is evaluated.
        should_stop: Polled before each forward pass; returning True raises
            :class:`ExplainStopped`.

    Returns:
        ``H x W`` float32 array, signed: positive values support ``target``.
    """
    from captum.attr import (
        GradientShap,
        GuidedGradCam,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    key = method_key(method)
    info = METHODS[key]
    if smoothgrad and not info.smoothgrad:
        raise StudioError(f"SmoothGrad works on gradient methods, not {info.title}")
    x = image.detach().float()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise StudioError("attribute() explains one picture at a time (1 x 3 x H x W)")
    side = x.shape[-1]
    base = torch.zeros_like(x) if baseline is None else baseline.detach().float().reshape(x.shape)
    model = _ready(model)
    if info.needs_layer and layer is None:
        layer = find_cam_layer(model, tuple(x.shape[-2:]))[1]

    total = _forward_count(key, side, steps, samples) * (smoothgrad_samples if smoothgrad else 1)
    watched = _Watched(model, total, progress, should_stop)
    span = float(x.max() - x.min()) or 1.0
    x.requires_grad_()
    with _seeded(seed), torch.enable_grad(), warnings.catch_warnings():
        # Captum announces the ReLU hooks of guided backpropagation every time.
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        if key == "gradcam":
            cam = LayerGradCam(watched, layer).attribute(x, target=target)
            attr = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
        elif key == "guided-gradcam":
            attr = GuidedGradCam(watched, layer).attribute(x, target=target)
        elif key == "occlusion":
            window, stride = _occlusion_window(side)
            attr = Occlusion(watched).attribute(
                x,
                sliding_window_shapes=(x.shape[1], window, window),
                strides=(x.shape[1], stride, stride),
                baselines=base,
                target=target,
                perturbations_per_eval=batch_size,
            )
        else:
            explainer, kwargs = {
                "saliency": (Saliency(watched), {"abs": False}),
                "ig": (
                    IntegratedGradients(watched),
                    {"baselines": base, "n_steps": steps, "internal_batch_size": batch_size},
                ),
                "gradshap": (
                    GradientShap(watched),
                    {
                        # The baseline plus a noisy version of it: SHAP averages over a spread.
                        "baselines": torch.cat([base, base + 0.5 * span * torch.rand_like(base)]),
                        "n_samples": samples,
                        "stdevs": noise * span,
                    },
                ),
            }[key]
            if smoothgrad:
                attr = NoiseTunnel(explainer).attribute(
                    x,
                    nt_type="smoothgrad",
                    nt_samples=smoothgrad_samples,
                    nt_samples_batch_size=1 if key == "ig" else batch_size,
                    stdevs=noise * span,
                    target=target,
                    **kwargs,
                )
            else:
                attr = explainer.attribute(x, target=target, **kwargs)
    return attr.detach()[0].sum(0).float().cpu().numpy()


# --------------------------------------------------------------------------- display


def normalize(values: np.ndarray, sign: str = "positive", percentile: float = 99.0) -> np.ndarray:
    """Scale a map for display: ``[0, 1]`` (or ``[-1, 1]`` for ``sign="all"``).

    The top 1% is clipped so that one extreme pixel does not wash out the rest.
    """
    if sign not in SIGNS:
        raise StudioError(f"sign must be one of {', '.join(SIGNS)}")
    values = np.asarray(values, dtype=np.float32)
    shown = {
        "positive": np.clip(values, 0, None),
        "negative": np.clip(-values, 0, None),
        "absolute": np.abs(values),
        "all": values,
    }[sign]
    magnitude = np.abs(shown)
    scale = np.percentile(magnitude[magnitude > 0], percentile) if (magnitude > 0).any() else 0.0
    if scale <= 0:
        return np.zeros_like(shown)
    low = -1.0 if sign == "all" else 0.0
    return np.clip(shown / scale, low, 1.0)


_COLOURMAPS = {"positive": "inferno", "negative": "viridis", "absolute": "inferno", "all": "RdBu_r"}


def overlay(
    image: Image.Image, values: np.ndarray, sign: str = "positive", opacity: float = 0.6
) -> Image.Image:
    """The picture with the map painted over it; weak attribution stays see-through."""
    from matplotlib import colormaps

    scaled = normalize(values, sign)
    base = image.convert("RGB").resize(scaled.shape[::-1], Image.Resampling.BILINEAR)
    colours = colormaps[_COLOURMAPS[sign]]((scaled + 1) / 2 if sign == "all" else scaled)[..., :3]
    strength = np.abs(scaled)[..., None] * float(np.clip(opacity, 0.0, 1.0))
    mixed = (1 - strength) * (np.asarray(base, np.float32) / 255) + strength * colours
    return Image.fromarray((mixed * 255).round().astype(np.uint8))


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


def _probability(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return logits.sigmoid() if multilabel else logits.softmax(-1)


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
    model = _ready(model)
    for kind, (first, second) in {"deletion": (zeros, x), "insertion": (x, blurred)}.items():
        # Pixels ranked below the cut come from `first`, the rest from `second`.
        batch = torch.cat(
            [torch.where(ranks < f * height * width, first, second) for f in fractions]
        )
        for chunk in batch.split(batch_size):
            probs = _probability(model(chunk), multilabel)[:, target]
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
        if self.final < 0.3:
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
    """Blocks from output to input, each a name and its modules (timm groups, else children)."""
    found = dict(model.named_modules())
    if hasattr(model, "group_matcher"):
        from .backbones import model_groups

        blocks = [
            (g.name, [found[m] for m in g.modules if m in found]) for g in model_groups(model)
        ]
    else:
        blocks = [(n, [m]) for n, m in model.named_children() if any(True for _ in m.parameters())]
    return list(reversed(blocks))


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
    with _seeded(seed):
        for n, depth in enumerate(depths, start=1):
            _randomise([m for _, mods in blocks[done:depth] for m in mods])
            done = depth
            label = (
                "everything" if depth == len(blocks) else f"{blocks[0][0]} … {blocks[depth - 1][0]}"
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
        corner = float(
            np.mean([s["corner"] for s in shares if s["corner_name"] == corner_name] or [0])
        )
        # A mark must be in the same corner in most pictures, not a different one each time.
        corner = corner * len([n for n in corner_names if n == corner_name]) / len(shares)
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


def evaluation_samples(run_dir: str | Path) -> list[tuple[str, str]]:
    """``(picture, true class)`` for the pictures a run was evaluated on (from metrics.json)."""
    from .runs import load_json, require_run

    metrics = load_json(require_run(run_dir) / "metrics.json")
    rows = metrics.get("predictions") or []
    if metrics.get("task") == "multilabel" or not rows:
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
    ):
        from .loaders import build_transform

        self.device = torch.device(device)
        self.model = _ready(model).to(self.device)
        self.labels = list(labels)
        self.multilabel = multilabel
        self.mean = torch.tensor(data_cfg["mean"]).view(3, 1, 1)
        self.std = torch.tensor(data_cfg["std"]).view(3, 1, 1)
        self._transform = build_transform(data_cfg, "none")
        self._layer: torch.nn.Module | None = None
        self._layer_problem: str | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> Explainer:
        from .export import load_run

        run = load_run(run_dir)
        p = run.preprocess
        cfg = {
            "input_size": tuple(p["input_size"]),
            "interpolation": p["interpolation"],
            "mean": tuple(p["mean"]),
            "std": tuple(p["std"]),
            "crop_pct": p["crop_pct"],
        }
        return cls(run.model, run.labels, cfg, run.multilabel, device)

    @classmethod
    def from_backbone(
        cls, name: str, weights_file: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> Explainer:
        """A catalog backbone with its ImageNet classifier (pretrained weights required)."""
        from timm.data import ImageNetInfo

        from .backbones import create_backbone, data_config

        model, _ = create_backbone(name, None, weights_file=weights_file)
        info = ImageNetInfo()
        labels = [info.index_to_description(i) for i in range(model.num_classes)]
        return cls(model, labels, data_config(model), device=device)

    @classmethod
    def load(cls, source: str | Path) -> Explainer:
        """A run folder, or a catalog backbone name for its ImageNet classes."""
        from .backbones import CATALOG

        if str(source) in CATALOG and not Path(source).is_dir():
            return cls.from_backbone(str(source))
        return cls.from_run(source)

    # -- pictures ---------------------------------------------------------------------------

    def prepare(self, image: str | Path | Image.Image) -> tuple[torch.Tensor, Image.Image]:
        """The model's input for a picture and that input shown as a picture."""
        from .images import ImageProblem, open_rgb

        if not isinstance(image, Image.Image):
            try:
                image = open_rgb(image)
            except ImageProblem as exc:
                raise DataError(f"cannot read {Path(image).name}: {exc}") from None
        x = self._transform(image.convert("RGB")).unsqueeze(0)
        shown = (x[0] * self.std + self.mean).clamp(0, 1)
        return x.to(self.device), Image.fromarray(
            (shown.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        )

    @torch.no_grad()
    def predict(self, x: torch.Tensor, top_k: int = 5) -> list[tuple[str, float]]:
        probs = _probability(self.model(x), self.multilabel)[0]
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

    def cam_layer(self, input_size: tuple[int, int]) -> torch.nn.Module:
        if self._layer is None and self._layer_problem is None:
            try:
                self._layer = find_cam_layer(self.model, input_size)[1]
            except StudioError as exc:
                self._layer_problem = str(exc)
        if self._layer is None:
            raise StudioError(self._layer_problem)
        return self._layer

    # -- maps -------------------------------------------------------------------------------

    def _options(self, method: str, x: torch.Tensor, options: dict) -> dict:
        options = dict(options)
        if METHODS[method].needs_layer:
            options["layer"] = self.cam_layer(tuple(x.shape[-2:]))
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
                    **self._options(key, x, options),
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
                self.model, result.input, values, result.target, multilabel=self.multilabel
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
            **self._options(key, result.input, options),
        )

    def shortcuts(
        self,
        samples: Sequence[tuple[str | Path, str]],
        *,
        method: str = "gradcam",
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[list[ShortcutRow], list[str]]:
        """:func:`shortcut_report` over picture files; also returns the files it could not read."""
        key = method_key(method)
        if METHODS[key].needs_layer:
            try:
                self.cam_layer(tuple(self.prepare(Image.new("RGB", (8, 8)))[0].shape[-2:]))
            except StudioError:
                key = "saliency"  # a ViT: no feature map, gradients still work
        prepared, skipped = [], []
        for path, label in samples:
            try:
                prepared.append((self.prepare(path)[0], self.target_index(label, label)))
            except StudioError:
                skipped.append(str(path))
        if not prepared:
            raise StudioError("no readable pictures to check")
        x = prepared[0][0]
        rows = shortcut_report(
            self.model,
            prepared,
            self.labels,
            method=key,
            progress=progress,
            should_stop=should_stop,
            **self._options(key, x, {}),
        )
        return rows, skipped
