"""The losses domain adaptation adds to a training step, on batches of features.

- :func:`coral_loss` (Deep CORAL, Sun & Saenko 2016): the squared Frobenius distance between
  the two batches' feature covariances, over ``4 d²``.
- :func:`mk_mmd_loss` (DAN, Long et al. 2015): the unbiased MMD² between the two batches with
  a sum of Gaussian kernels at five bandwidths around the batch's median distance.
- :class:`GradientReversal` (DANN, Ganin et al. 2016): identity forward, gradient times
  ``-weight`` backward, so the features learn to fool a domain classifier;
  :func:`dann_weight` is the usual ramp ``2 / (1 + exp(-10 p)) - 1`` of that weight over the
  training's progress ``p``.

Written here rather than taken from a library: pytorch-adapt (0.0.83, the last release) pins
``torchmetrics==0.9.3`` and ``pytorch-metric-learning==1.6.3`` exactly, which would downgrade a
person's environment, and TLlib is not on PyPI. Each loss is a few lines; the tests check them
against hand computations.
"""

from __future__ import annotations

import math

import torch

__all__ = ["coral_loss", "mk_mmd_loss", "GradientReversal", "dann_weight"]


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``|C_s - C_t|²_F / (4 d²)`` for feature batches of shape ``(n, d)``."""
    d = source.shape[1]

    def covariance(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(0, keepdim=True)
        return centred.T @ centred / max(1, len(x) - 1)

    return (covariance(source) - covariance(target)).pow(2).sum() / (4 * d * d)


def mk_mmd_loss(source: torch.Tensor, target: torch.Tensor,
                scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:  # fmt: skip
    """Unbiased MMD² with ``sum_k exp(-|a - b|² / (2 s_k σ²))``, σ² the median squared distance
    of the pooled batch (held fixed: no gradient flows through the bandwidth)."""
    z = torch.cat([source, target]).float()
    d2 = torch.cdist(z, z).pow(2)
    m, n = len(source), len(target)
    off = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    sigma2 = torch.quantile(d2.detach()[off], 0.5).clamp_min(1e-8)
    k = sum(torch.exp(-d2 / (2 * s * sigma2)) for s in scales) * off
    xx = k[:m, :m].sum() / (m * (m - 1))
    yy = k[m:, m:].sum() / (n * (n - 1))
    xy = k[:m, m:].sum() / (m * n)
    return xx + yy - 2 * xy


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-weight`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def dann_weight(progress: float) -> float:
    """DANN's ramp from 0 at the start to (almost) 1 at the end of training."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0
