"""The pruned kind: a timm model with whole channels removed, saved as safetensors.

Torch-Pruning removes channels physically (the layers become narrower), so the saved weights no
longer fit ``timm.create_model``. Torch-Pruning's own way to save such a model pickles the whole
module, and the studio never unpickles; so ``model.json`` records each resized layer's widths
(:func:`layer_widths`), and loading builds the unpruned architecture, narrows those layers to
the recorded widths (:func:`narrow_to`) and loads the weights strictly. Only the three layer
types channel pruning changes in these backbones are narrowed (convolutions, batch norms,
linear layers); anything else that does not match fails the strict load with a plain message.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..runs import WEIGHTS
from .kinds import ModelKind, register_kind

__all__ = ["layer_widths", "narrow_to", "PRUNED"]


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """``{layer name: [in, out, groups]}`` for convolutions, ``[features]`` for batch norms and
    ``[in, out]`` for linear layers: what :func:`narrow_to` needs to rebuild the shapes."""
    widths = {}
    for name, m in model.named_modules():
        w = layer_widths_of(m)
        if w is not None:
            widths[name] = w
    return widths


def _narrow_conv(m: nn.Conv2d, c_in: int, c_out: int, groups: int) -> None:
    m.in_channels, m.out_channels, m.groups = c_in, c_out, groups
    m.weight = nn.Parameter(torch.empty(c_out, c_in // groups, *m.kernel_size))
    if m.bias is not None:
        m.bias = nn.Parameter(torch.empty(c_out))


def _narrow_norm(m: nn.BatchNorm2d, features: int) -> None:
    m.num_features = features
    if m.affine:
        m.weight, m.bias = nn.Parameter(torch.empty(features)), nn.Parameter(torch.empty(features))
    if m.track_running_stats:
        m.running_mean, m.running_var = torch.zeros(features), torch.ones(features)


def _narrow_linear(m: nn.Linear, f_in: int, f_out: int) -> None:
    m.in_features, m.out_features = f_in, f_out
    m.weight = nn.Parameter(torch.empty(f_out, f_in))
    if m.bias is not None:
        m.bias = nn.Parameter(torch.empty(f_out))


def narrow_to(model: nn.Module, widths: dict[str, list[int]]) -> nn.Module:
    """Resize ``model``'s layers in place to the recorded ``widths`` (weights uninitialised:
    load them next)."""
    for name, m in model.named_modules():
        w = widths.get(name)
        if w is None or w == layer_widths_of(m):
            continue
        if isinstance(m, nn.Conv2d) and len(w) == 3:
            _narrow_conv(m, *w)
        elif isinstance(m, nn.BatchNorm2d) and len(w) == 1:
            _narrow_norm(m, *w)
        elif isinstance(m, nn.Linear) and len(w) == 2:
            _narrow_linear(m, *w)
        else:
            raise ValueError(f"layer {name} cannot take the recorded widths {w}")
    return model


def layer_widths_of(m: nn.Module) -> list[int] | None:
    """One layer's entry in :func:`layer_widths` (None for a layer it does not record)."""
    if isinstance(m, nn.Conv2d):
        return [m.in_channels, m.out_channels, m.groups]
    if isinstance(m, nn.BatchNorm2d):
        return [m.num_features]
    if isinstance(m, nn.Linear):
        return [m.in_features, m.out_features]
    return None


def _build(run: Path, record: dict) -> nn.Module:
    import timm

    model = timm.create_model(
        record["backbone"], pretrained=False, num_classes=int(record["num_classes"])
    )
    narrow_to(model, record["widths"])
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    return model


PRUNED = register_kind(ModelKind("pruned", _build, python_sample=False))
