"""Decode any image a person is likely to drop in, or say precisely why it cannot be used.

Photos arrive as grayscale scans, palette GIFs, RGBA screenshots, CMYK print files, 16-bit TIFFs and
phone pictures whose pixels are stored sideways with an EXIF rotation tag. A model wants plain 8-bit
RGB the right way up, so every image passes through :func:`open_rgb`. Files that cannot be decoded
(truncated, empty, not an image, or so large that decoding would exhaust memory) raise
:class:`ImageProblem` with a short reason that ends up in the data report.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "MAX_ASPECT",
    "ImageProblem",
    "open_rgb",
    "is_image_name",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# 40 megapixels: a modern phone photo passes, a decompression bomb does not.
DEFAULT_MAX_PIXELS = 40_000_000

# Longest side over shortest. Preparing a picture scales its short side up to the model's size,
# so a 1x39000 strip (238 bytes as PNG) would become 256x9,984,000 pixels: ~10 GB. Panoramas
# (about 1:4) and long receipts (1:10) pass; strips beyond this are refused from the header.
MAX_ASPECT = 50

# Truncated files must fail loudly instead of decoding into grey half-images.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageProblem(ValueError):
    """An image file that cannot be used; ``str(exc)`` is the reason shown to the user."""


def is_image_name(path: str | Path) -> bool:
    """True when the file name has an image extension (the content is checked on decode)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def open_rgb(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, at_least: int | None = None
) -> Image.Image:
    """Decode ``path`` into an upright 8-bit RGB image.

    The pixel count is checked from the header before any pixel data is decoded, so an oversized
    file costs nothing.

    Args:
        path: Image file.
        max_pixels: Images with more pixels than this are refused.
        at_least: A JPEG may be decoded smaller, keeping at least this many pixels on each side
            (see :func:`open_reduced`); None: full size.

    Returns:
        A fully loaded ``PIL.Image`` in mode ``"RGB"``.

    Raises:
        ImageProblem: The file is empty, not an image, truncated or too large.
    """
    return open_reduced(path, max_pixels, at_least)[0]


# EXIF orientations that turn a picture a quarter: its upright width is the stored height.
_QUARTER_TURNS = (5, 6, 7, 8)


def open_reduced(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, at_least: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`open_rgb`, decoded smaller where the format allows it, and the picture's upright
    size as stored.

    With ``at_least``, a JPEG is decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain
    (PIL's ``draft``), keeping at least ``at_least`` pixels on each side: a 12-megapixel photo
    decodes about 8x faster at 1/8. The data report's hashes and thumbnails need no more than
    a few dozen pixels; a model's preparation, which first shrinks the shorter side to a few
    hundred, needs no more than that (:func:`studio.data.loaders.prepared`).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageProblem(f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageProblem("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageProblem(
                        f"too large: {width}x{height} pixels (limit {max_pixels:,} pixels)"
                    )
                if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
                    raise ImageProblem(
                        f"too long and thin: {width}x{height} pixels (a picture may be at most "
                        f"{MAX_ASPECT} times longer than it is wide)"
                    )
                if at_least is not None and img.format == "JPEG":
                    img.draft(img.mode, (at_least, at_least))
                turned = img.getexif().get(0x0112) in _QUARTER_TURNS  # the EXIF orientation
                img.load()
                return to_rgb(img), ((height, width) if turned else (width, height))
    except ImageProblem:
        raise
    except UnidentifiedImageError:
        raise ImageProblem("not an image, or a format that cannot be read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageProblem("too large to decode safely (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc).lower()
        if "truncat" in message or isinstance(exc, EOFError):
            raise ImageProblem("truncated or damaged image data") from None
        raise ImageProblem(f"cannot decode image ({exc})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an already loaded image of any mode to upright 8-bit RGB."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's own I;16 -> L conversion clips at 255; rescale the real value range instead.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, as they look in a browser, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")
    return img.copy() if img.readonly else img
