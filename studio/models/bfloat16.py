"""The bfloat16 kind: a PyTorch model whose weights and arithmetic are 16-bit brain floats.

bfloat16 keeps float32's range with an 8-bit mantissa, so a trained model converts without
calibration and gives the same answers on nearly every picture. Unlike fp16 on a CPU, it is
*faster* where the CPU computes it natively: AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper
Lake) or AMX (Intel Sapphire Rapids and later), through PyTorch's oneDNN convolutions. Without
them PyTorch emulates it and the model gets slower, so :func:`bf16_fast_here` decides whether
the studio offers it at all. ONNX Runtime's CPU provider has no bfloat16 convolutions, so this
kind runs in PyTorch: its file is ``model.safetensors`` in bfloat16 (half the float file) and
its exports are ``torch.export`` and TorchScript programs, never ONNX.

The record names the kind of the model it was converted from (``base``: a timm model, or a
pruned one with its recorded widths), so loading builds that architecture, loads the weights and
converts it. The loaded module (:class:`ChannelsLastClassifier`) takes and returns float32, as every
other run's model does, so Evaluate, Predict and the exported programs are fed the same
pictures; inside, pictures and weights are bfloat16 in channels-last memory order (oneDNN's
fastest layout for convolutions: 1.7x faster than the default order, measured on the example).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .kinds import KINDS, ModelKind, register_kind

__all__ = ["ChannelsLastClassifier", "BF16", "bf16_fast_here", "channels_last_copy"]


def bf16_fast_here() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), so a bfloat16 model
    is faster than its float one instead of slower."""
    cpu = torch.cpu
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # an older or newer PyTorch without these queries: read the flags
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


class ChannelsLastClassifier(nn.Module):
    """A model held and run in ``dtype`` (bfloat16; float32 to time its parent alike) and
    channels-last order, fed and answering in float32 as every run's model is."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.dtype = dtype
        self.model = model.to(dtype, memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # ``x``: the name exports give it
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(x).float()


def channels_last_copy(model: nn.Module, dtype: torch.dtype) -> ChannelsLastClassifier:
    """A copy of a float model in ``dtype`` and channels-last order (the original is left as
    it is)."""
    import copy

    return ChannelsLastClassifier(copy.deepcopy(model), dtype).eval()


def _build(run: Path, record: dict) -> nn.Module:
    base = KINDS[record.get("base", "timm")]
    return ChannelsLastClassifier(base.build(run, record), torch.bfloat16)


BF16 = register_kind(
    ModelKind(
        "torch-bf16",
        _build,
        gradients=False,
        exports=("pt2", "torchscript"),
        why_not="it computes in bfloat16, which ONNX Runtime cannot run on a CPU and whose "
        "8-bit mantissa rounds away the small gradients attribution maps are made of; use the "
        "float run it was made from for those",
        python_sample=False,
    )
)
