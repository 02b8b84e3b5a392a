"""From samples to tensors: transforms (timm's, configured by the model) and data loaders."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from timm.data import create_transform
from torch.utils.data import DataLoader
from torchvision.transforms import Resize

from .dataset import Sample
from .images import open_rgb

__all__ = [
    "AUGMENT_PRESETS",
    "build_transform",
    "augmentation_preview",
    "ImageSamples",
    "image_loader",
    "default_workers",
    "source_side",
    "prepared",
]

# Each preset is a set of arguments to timm's create_transform; strength grows down the list.
AUGMENT_PRESETS: dict[str, dict] = {
    "none": {},
    "light": {"scale": (0.6, 1.0), "hflip": 0.5, "color_jitter": 0.2},
    "strong": {
        "scale": (0.25, 1.0),
        "hflip": 0.5,
        "color_jitter": 0.4,
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "re_prob": 0.25,
    },
}


def build_transform(data_cfg: dict, augment: str = "none", training: bool = False):
    """The model's own preprocessing (size, crop, mean/std) plus the augmentation preset."""
    if augment not in AUGMENT_PRESETS:
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENT_PRESETS)}")
    if not training or augment == "none":
        return create_transform(**data_cfg, is_training=False)
    return create_transform(**data_cfg, is_training=True, **AUGMENT_PRESETS[augment])


def augmentation_preview(paths: list[str], data_cfg: dict, augment: str, seed: int = 0) -> list:
    """What training feeds the model from each picture with ``augment``, as 8-bit RGB arrays:
    the backbone's own size, crop and interpolation, before the colours are normalised (a
    normalised picture cannot be shown)."""
    from ..rng import seeded

    shown = {**data_cfg, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    tf = build_transform(shown, augment, training=True)
    out = []
    with seeded(seed):
        for path in paths:
            tensor = prepared(path, tf).clamp(0, 1)
            out.append((tensor.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    return out


def source_side(transform) -> int | None:
    """The fewest pixels a picture needs on each side for ``transform`` to see what it would
    see in the picture at full size; None: the full size.

    A model's own preparation first shrinks the shorter side to a few hundred pixels
    (EfficientNet-Lite0: 256, then the centre 224x224), so a phone photo's millions of pixels
    are decoded only to be averaged away: a 3000x2000 JPEG took 80 ms to decode and shrink, and
    11.6 ms decoded at 1/4 of its size in the DCT domain (still at least 256 pixels a side), on
    this 2-core CPU; EfficientNet-Lite0's pooled features on 119 such photos agreed with the
    full decode's to a cosine of 0.998 or more. Augmentation's random crops can zoom in, so a
    training transform gets the full size. Only torchvision's ``Resize`` as the first step
    (what timm's evaluation transforms start with) counts; anything else: full size.
    """
    steps = getattr(transform, "transforms", None) or [transform]
    if not isinstance(steps[0], Resize):
        return None
    size = steps[0].size
    return int(size) if isinstance(size, int) else int(max(size))


def prepared(path, transform) -> torch.Tensor:
    """The picture at ``path`` as ``transform`` prepares it for a model, decoded no larger
    than :func:`source_side` needs. Every place that feeds a model a picture from a file goes
    through here, so training, evaluation, prediction and the export's check see the same
    pixels (the export's sample code decodes the same way, with Pillow's ``draft``)."""
    return transform(open_rgb(path, at_least=source_side(transform)))


class ImageSamples(torch.utils.data.Dataset):
    """Decodes images lazily; targets are class indices, or multi-hot vectors for multi-label."""

    def __init__(self, samples: Sequence[Sample], transform, num_classes: int, multilabel: bool):
        self.samples, self.transform = list(samples), transform
        self.num_classes, self.multilabel = num_classes, multilabel

    def __len__(self) -> int:
        return len(self.samples)

    def target(self, index: int) -> torch.Tensor:
        labels = self.samples[index].labels
        if self.multilabel:
            hot = torch.zeros(self.num_classes)
            hot[list(labels)] = 1.0
            return hot
        return torch.tensor(labels[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return prepared(self.samples[index].path, self.transform), self.target(index)

    def targets(self) -> torch.Tensor:
        return torch.stack([self.target(i) for i in range(len(self))])


def default_workers(n_images: int) -> int:
    """Worker processes for decoding: none for small sets (start-up costs more than it saves)."""
    if n_images < 400:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def image_loader(
    dataset: ImageSamples,
    batch_size: int,
    *,
    shuffle: bool = False,
    sampler: Sequence[int] | None = None,
    seed: int = 0,
    workers: int = -1,
    pin_memory: bool = False,
) -> DataLoader:
    """A seeded loader: the same seed (or the same ``sampler`` order) gives the same batches."""
    workers = default_workers(len(dataset)) if workers < 0 else workers
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=False,
        drop_last=False,
    )
