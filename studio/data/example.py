"""The bundled example dataset: three kinds of surface (brick, grass, gravel) a class can tell apart.

Made from the texture photographs that ship inside scikit-image (``skimage.data.brick``,
``grass`` and ``gravel``: real 512x512 photographs), cut into non-overlapping tiles so that no
two images share a pixel: there is no leakage between train and test. A teacher can show it in
class ("can the computer tell what a surface is made of?") and the default run reaches high
held-out accuracy within a minute on a laptop.

The multi-task example (``assets/example-tasks``: ``labels.csv`` with ``path,material,colour``)
is the same tiles with a colour cast laid over each, a third of each material per colour
(natural, red, blue), chosen by a seeded shuffle: two questions about one picture, "what is it
made of?" and "what light was it photographed in?", for one model with two heads.

``python -m studio.data.example [DEST] [--tasks TASKS_DEST]`` rebuilds them; the same seed gives
the same files.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..paths import assets_dir, cache_dir

__all__ = [
    "CLASSES",
    "COLOURS",
    "example_dataset",
    "make_example_dataset",
    "multitask_example",
    "make_multitask_example",
]

CLASSES = ("brick", "grass", "gravel")
TILE = 80  # 512 // 80 = 6 tiles a side: 36 disjoint tiles per photograph
OUTPUT_SIZE = 128


def make_example_dataset(dest: str | Path, seed: int = 0) -> Path:
    """Write ``dest/<class>/<class>_NN.jpg`` (36 per class) and return ``dest``.

    Each tile is resized to 128 px and randomly flipped or rotated by a multiple of 90 degrees
    (seeded), as a phone photo of a surface might be taken from any side.
    """
    import skimage.data

    dest = Path(dest)
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        photo = np.asarray(getattr(skimage.data, name)())
        folder = dest / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        tiles_per_side = photo.shape[0] // TILE
        index = 0
        for row in range(tiles_per_side):
            for col in range(tiles_per_side):
                tile = photo[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
                tile = np.rot90(tile, k=int(rng.integers(4)))
                if rng.random() < 0.5:
                    tile = np.fliplr(tile)
                image = Image.fromarray(np.ascontiguousarray(tile)).convert("RGB")
                image = image.resize((OUTPUT_SIZE, OUTPUT_SIZE), Image.Resampling.BICUBIC)
                image.save(folder / f"{name}_{index:02d}.jpg", quality=90)
                index += 1
    (dest / "README.txt").unlink(missing_ok=True)
    return dest


# A colour cast per colour: a gain per RGB channel.
COLOURS = {"natural": (1.0, 1.0, 1.0), "red": (1.35, 0.8, 0.8), "blue": (0.8, 0.9, 1.35)}


def make_multitask_example(dest: str | Path, seed: int = 0) -> Path:
    """Write ``dest/labels.csv`` (``path,material,colour``) and ``dest/pictures/*.jpg``: every
    example tile with one colour cast, each colour on a third of each material (seeded)."""
    dest = Path(dest)
    pictures = dest / "pictures"
    if pictures.exists():
        shutil.rmtree(pictures)
    pictures.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = ["path,material,colour"]
    for material in CLASSES:
        tiles = sorted((example_dataset() / material).glob("*.jpg"))
        colours = [list(COLOURS)[i % len(COLOURS)] for i in range(len(tiles))]
        rng.shuffle(colours)
        for tile, colour in zip(tiles, colours):
            pixels = np.asarray(Image.open(tile).convert("RGB"), dtype=np.float32)
            pixels = np.clip(pixels * np.float32(COLOURS[colour]), 0, 255).astype(np.uint8)
            name = f"{material}_{colour}_{tile.stem.rsplit('_', 1)[-1]}.jpg"
            Image.fromarray(pixels).save(pictures / name, quality=90)
            rows.append(f"pictures/{name},{material},{colour}")
    (dest / "labels.csv").write_text("\n".join(rows) + "\n")
    return dest


def multitask_example() -> Path:
    """The multi-task example's folder (``labels.csv`` inside): shipped, else made in the cache."""
    shipped = assets_dir() / "example-tasks"
    if (shipped / "labels.csv").is_file():
        return shipped
    target = cache_dir("example-tasks")
    if not (target / "labels.csv").is_file():
        make_multitask_example(target)
    return target


def example_dataset() -> Path:
    """The example dataset's folder: the copy in ``assets/``, else one generated into the cache."""
    shipped = assets_dir() / "example"
    if all((shipped / name).is_dir() for name in CLASSES):
        return shipped
    target = cache_dir("example")
    if not all((target / name).is_dir() for name in CLASSES):
        make_example_dataset(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", default=str(assets_dir() / "example"))
    parser.add_argument("--tasks", default=str(assets_dir() / "example-tasks"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_example_dataset(args.dest, args.seed))
    print(make_multitask_example(args.tasks, args.seed))


if __name__ == "__main__":
    main()
