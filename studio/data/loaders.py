"""From samples to tensors: transforms (timm's, configured by the model) and data loaders."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from timm.data import create_transform
from torch.utils.data import DataLoader

from .dataset import Sample
from .images import open_rgb

__all__ = [
    "AUGMENT_PRESETS",
    "build_transform",
    "augmentation_preview",
    "ImageSamples",
    "image_loader",
    "default_workers",
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
    from .images import open_rgb

    shown = {**data_cfg, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    tf = build_transform(shown, augment, training=True)
    out = []
    with seeded(seed):
        for path in paths:
            tensor = tf(open_rgb(path)).clamp(0, 1)
            out.append((tensor.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    return out


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
        image = open_rgb(self.samples[index].path)
        return self.transform(image), self.target(index)

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
