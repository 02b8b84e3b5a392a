"""A shifted copy of a picture folder: the same classes as a different camera would see them.

Made by a seeded script from real photos, for the tests, the benchmark and a first look at the
Domain tools: each picture gets a colour cast, a blur, a small rotation and heavy JPEG
compression (the shifts a phone camera, another microscope or a scanner bring), with the
strength and the draws fixed by ``seed``.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageFilter

from ..data.images import is_image_name, open_rgb

__all__ = ["shifted_copy"]


def _shift(img: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    r, g, b = img.split()
    warm = 1 + 0.35 * strength
    r = r.point(lambda v: min(255, int(v * warm)))
    b = b.point(lambda v: int(v / warm))
    img = Image.merge("RGB", (r, g, b))
    img = img.filter(ImageFilter.GaussianBlur(radius=2.5 * strength))
    angle = rng.uniform(-20, 20) * strength
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128))


def shifted_copy(
    source: str | Path, dest: str | Path, seed: int = 0, strength: float = 1.0
) -> Path:
    """Write every picture of ``source`` (class sub-folders kept) under ``dest``, shifted."""
    source, dest = Path(source), Path(dest)
    rng = random.Random(seed)
    for path in sorted(p for p in source.rglob("*") if p.is_file() and is_image_name(p)):
        out = (dest / path.relative_to(source)).with_suffix(".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        quality = max(5, int(40 - 30 * strength))
        _shift(open_rgb(path), rng, strength).save(out, "JPEG", quality=quality)
    return dest
