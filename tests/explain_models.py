"""Tiny hand-built models whose decision provably depends on one known image region."""

from __future__ import annotations

import torch
from torch import nn

SIZE = 64


def region_mask(top: int, left: int, height: int, width: int, size: int = SIZE) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., top : top + height, left : left + width] = 1
    return mask


def border_mask(band: int = 8, size: int = SIZE) -> torch.Tensor:
    mask = torch.ones(1, 1, size, size)
    mask[..., band:-band, band:-band] = 0
    return mask


class Mask(nn.Module):
    """Zeroes every feature outside the region: nothing else can reach the classifier."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x * self.mask


class RegionNet(nn.Module):
    """Class 1's score is the brightness inside ``mask``; class 0's is its negative.

    Convolutions have positive weights, so brighter pixels in the region always raise class 1:
    deleting the region's pixels must lower its probability, whatever else the picture holds.
    """

    def __init__(self, mask: torch.Tensor, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            Mask(mask),
        )
        with torch.no_grad():
            for conv in (self.features[0], self.features[2]):
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator) / 9)
                conv.bias.zero_()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            # About 6 for a typical region, 0 for a blank one: p(class 1) moves from ~0.95 to ~0.05.
            self.fc.weight.copy_(torch.tensor([[-0.5] * 4, [0.5] * 4]) / mask.mean())
            self.fc.bias.copy_(torch.tensor([1.5, -1.5]))
        self.eval()

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def picture(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """A textured positive picture (values 0..1), 1 x 3 x size x size."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 8, size // 8, generator=generator)
    fine = torch.rand(1, 3, size, size, generator=generator)
    up = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return (0.7 * up + 0.3 * fine).clamp(0, 1)
