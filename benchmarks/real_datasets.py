"""Real datasets that install offline, written as picture folders ``train/<class>/`` and
``test/<class>/`` (the studio carves its validation pictures out of ``train/``).

- ``fashion``: Fashion-MNIST (Zalando, 28x28 grayscale photos of garments, 10 classes), from
  Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``): the
  kind of held-out set a new user brings (30 training and 100 test pictures per class).
- ``digits``: scikit-learn's bundled handwritten digits (UCI, 8x8 grayscale, 10 classes).
- ``fashion100``: the same with 100 training pictures a class (85 after validation).
- ``faces``: scikit-image's bundled LFW subset (25x25 grayscale crops of real photographs: 100
  faces and 100 non-faces).
- ``fashion-tasks``: Fashion-MNIST as a multi-task table (garment, which way up, colour cast).

Each is a seeded sample, the same files for the same seed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as fh:
        data = fh.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _write(dest: Path, images, labels, names, per_class: dict[str, int], seed: int) -> Path:
    """Write ``per_class[split]`` pictures of every class into ``dest/split/class/``."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    for label, name in enumerate(names):
        idx = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for split, count in per_class.items():
            folder = dest / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx[start : start + count]:
                Image.fromarray(images[i]).save(folder / f"{name}_{i:05d}.png")
            start += count
    return dest


def fashion(dest: Path, train: int = 30, test: int = 100, seed: int = 0) -> Path:
    if not FASHION_DIR.is_dir():
        raise FileNotFoundError("apt-get install dataset-fashion-mnist")
    images = _idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    labels = _idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    return _write(dest, images, labels, FASHION_CLASSES, {"train": train, "test": test}, seed)


def digits(dest: Path, train: int = 30, test: int = 100, seed: int = 0) -> Path:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * 255 / 16).round().astype(np.uint8)
    names = [f"digit-{d}" for d in range(10)]
    return _write(dest, images, bunch.target, names, {"train": train, "test": test}, seed)


def faces(dest: Path, train: int = 30, test: int = 70, seed: int = 0) -> Path:
    import skimage.data

    images = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
    labels = np.array([0] * 100 + [1] * 100)  # the first 100 are faces
    return _write(
        dest, images, labels, ["face", "not-a-face"], {"train": train, "test": test}, seed
    )


def fashion100(dest: Path) -> Path:
    """Fashion-MNIST with 100 training pictures a class: where the automatic choice fine-tunes."""
    return fashion(dest, train=100)


# A colour cast per colour (the multi-task example's own): a gain per RGB channel.
CASTS = {"natural": (1.0, 1.0, 1.0), "red": (1.35, 0.8, 0.8), "blue": (0.8, 0.9, 1.35)}


def fashion_tasks(dest: Path, train: int = 30, test: int = 30, seed: int = 0) -> Path:
    """Fashion-MNIST as three questions per picture, a ``labels.csv`` with a split column:
    ``item`` (the garment, 10 values), ``way_up`` (``upright`` or ``upside-down``: the photo
    turned over, chosen by a seeded draw) and ``colour`` (a colour cast laid over the grey
    photo, seeded). The photos are real (Debian's ``dataset-fashion-mnist``); the two added
    questions are made here, independent of the garment and of each other."""
    if not FASHION_DIR.is_dir():
        raise FileNotFoundError("apt-get install dataset-fashion-mnist")
    images = _idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    labels = _idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    rows = ["path,split,item,way_up,colour"]
    (dest / "pictures").mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(FASHION_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == label))[: train + test]
        for n, i in enumerate(idx):
            flip, colour = bool(rng.integers(2)), list(CASTS)[int(rng.integers(len(CASTS)))]
            grey = images[i][::-1] if flip else images[i]
            rgb = np.clip(np.stack([grey] * 3, -1) * np.float32(CASTS[colour]), 0, 255)
            file = f"pictures/{name}_{i:05d}.png"
            Image.fromarray(rgb.astype(np.uint8)).save(dest / file)
            way = "upside-down" if flip else "upright"
            # The split is written out (val too), so a run of one task sees the same pictures.
            split = "train" if n < round(train * 0.85) else "val" if n < train else "test"
            rows.append(f"{file},{split},{name},{way},{colour}")
    (dest / "labels.csv").write_text("\n".join(rows) + "\n")
    return dest / "labels.csv"


MAKERS = {
    "fashion": fashion,
    "digits": digits,
    "faces": faces,
    "fashion100": fashion100,
    "fashion-tasks": fashion_tasks,
}


def folder(name: str, work: Path) -> Path:
    """The dataset ``name`` as a folder: the bundled example, or one of :data:`MAKERS` written
    under ``work``."""
    if name == "example":
        from studio.data.example import example_dataset

        return example_dataset()
    return MAKERS[name](work / "data" / name)
