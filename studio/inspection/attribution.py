"""Captum attribution maps behind one call: ``attribute(model, x, method, target) -> H x W``.

Every map comes from Captum (no attribution method is written here); this module chooses the
layer, baselines, batch sizes and strides, and reduces the result to one signed map at the
model's input resolution. :func:`overlay` paints a map over the picture for people to look at.

>>> values = attribute(model, x, "gradcam", target=3)  # doctest: +SKIP
>>> overlay(picture, values, sign="positive", opacity=0.6).save("map.png")  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import StudioError
from ..rng import seeded

__all__ = [
    "METHODS",
    "SIGNS",
    "Method",
    "ExplainStopped",
    "method_key",
    "model_blocks",
    "ready_for_attribution",
    "attribute",
    "find_cam_layer",
    "normalize",
    "overlay",
    "colour_scale",
    "for_display",
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
        # Channels-last input runs the convolutions that way, forward and backward: about
        # 1.8x faster on a 2-core AVX-512 CPU; the maps are the same (the layout, not the values).
        out = self.model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
        self.seen += x.shape[0]
        if self.progress is not None:
            self.progress(min(self.seen / self.total, 1.0))
        return out


def ready_for_attribution(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, and no in-place activations: Captum's backward hooks cannot wrap them."""
    model.eval()
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return model


def model_blocks(model: torch.nn.Module) -> list[tuple[str, list[tuple[str, torch.nn.Module]]]]:
    """The model's blocks from input to output, each ``(name, [(module name, module)])``.

    A timm backbone's groups (stem, stages, head: the units of freezing), else the model's
    children; where Grad-CAM looks for a feature map and what the sanity check randomises.
    """
    if not hasattr(model, "group_matcher"):
        return [(name, [(name, module)]) for name, module in model.named_children()]
    from ..models.backbones import model_groups

    found = dict(model.named_modules())
    return [(g.name, [(m, found[m]) for m in g.modules if m in found]) for g in model_groups(model)]


def find_cam_layer(
    model: torch.nn.Module, input_size: tuple[int, int]
) -> tuple[str, torch.nn.Module]:
    """The last block whose output is still a spatial feature map (``N x C x H x W``, H, W > 1).

    The blocks come from the backbone's groups (stem, stages, head), so no per-model table is
    needed; one probe forward records their output shapes.

    Raises:
        StudioError: The model has no such map (a Vision Transformer's blocks output tokens).
    """
    candidates = [pair for _, modules in model_blocks(model) for pair in modules]
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
    key = method_key(method)
    info = METHODS[key]
    if smoothgrad and not info.smoothgrad:
        raise StudioError(f"SmoothGrad works on gradient methods, not {info.title}")
    x = image.detach().float()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise StudioError("attribute() explains one picture at a time (1 x 3 x H x W)")
    base = torch.zeros_like(x) if baseline is None else baseline.detach().float().reshape(x.shape)
    model = ready_for_attribution(model)
    if info.needs_layer and layer is None:
        layer = find_cam_layer(model, tuple(x.shape[-2:]))[1]

    total = _forward_count(key, x.shape[-1], steps, samples)
    watched = _Watched(
        model, total * (smoothgrad_samples if smoothgrad else 1), progress, should_stop
    )
    span = float(x.max() - x.min()) or 1.0  # noise is a fraction of the picture's range
    x.requires_grad_()
    with seeded(seed), torch.enable_grad(), warnings.catch_warnings():
        # Captum announces the ReLU hooks of guided backpropagation every time.
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        if key in ("gradcam", "guided-gradcam", "occlusion"):
            attr = _layer_or_occlusion(key, watched, x, target, layer, base, batch_size)
        else:
            explainer, kwargs = _gradient_method(
                key, watched, base, span, steps, samples, noise, batch_size
            )
            if smoothgrad:
                attr = _smoothed(
                    explainer, x, target, key, smoothgrad_samples, noise * span, batch_size, kwargs
                )
            else:
                attr = explainer.attribute(x, target=target, **kwargs)
    return attr.detach()[0].sum(0).float().cpu().numpy()


def _layer_or_occlusion(key, watched, x, target, layer, base, batch_size) -> torch.Tensor:
    """Grad-CAM (upsampled to the picture), Guided Grad-CAM or Occlusion."""
    from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam, Occlusion

    if key == "gradcam":
        cam = LayerGradCam(watched, layer).attribute(x, target=target)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    if key == "guided-gradcam":
        return GuidedGradCam(watched, layer).attribute(x, target=target)
    window, stride = _occlusion_window(x.shape[-1])
    return Occlusion(watched).attribute(
        x,
        sliding_window_shapes=(x.shape[1], window, window),
        strides=(x.shape[1], stride, stride),
        baselines=base,
        target=target,
        perturbations_per_eval=batch_size,
    )


def _gradient_method(key, watched, base, span, steps, samples, noise, batch_size) -> tuple:
    """The Captum explainer for Saliency, Integrated Gradients or GradientSHAP, and its options."""
    from captum.attr import GradientShap, IntegratedGradients, Saliency

    if key == "saliency":
        return Saliency(watched), {"abs": False}
    if key == "ig":
        explainer = IntegratedGradients(watched)
        return explainer, {"baselines": base, "n_steps": steps, "internal_batch_size": batch_size}
    # GradientSHAP: the baseline plus a noisy version of it, SHAP averages over both
    return GradientShap(watched), {
        "baselines": torch.cat([base, base + 0.5 * span * torch.rand_like(base)]),
        "n_samples": samples,
        "stdevs": noise * span,
    }


def _smoothed(explainer, x, target, key, n, stdevs, batch_size, kwargs) -> torch.Tensor:
    """SmoothGrad: ``explainer`` averaged over ``n`` noisy copies (Captum's NoiseTunnel)."""
    from captum.attr import NoiseTunnel

    return NoiseTunnel(explainer).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=n,
        nt_samples_batch_size=1 if key == "ig" else batch_size,
        stdevs=stdevs,
        target=target,
        **kwargs,
    )


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


_SCALE_WORDS = {
    "positive": ("no evidence", "strong evidence for the class"),
    "negative": ("no evidence", "strong evidence against the class"),
    "absolute": ("no evidence", "strong evidence, for or against"),
    "all": ("against the class", "for the class"),
}


def colour_scale(sign: str, stops: int = 7) -> tuple[list[str], str, str]:
    """The colours :func:`overlay` paints with, low to high, as CSS hex, and what each end
    means: the legend a map needs to be read at all."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps[_COLOURMAPS[sign]]
    colours = [to_hex(cmap(i / (stops - 1))) for i in range(stops)]
    low, high = _SCALE_WORDS[sign]
    return colours, low, high


def for_display(image: Image.Image, minimum: int = 256) -> Image.Image:
    """A small picture enlarged (blocky, not blurred: its real pixels) so it can be seen; a
    28 px picture shown at 28 px is a smudge."""
    short = min(image.size)
    if short >= minimum:
        return image
    factor = -(-minimum // short)
    size = (image.width * factor, image.height * factor)
    return image.resize(size, Image.Resampling.NEAREST)


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
