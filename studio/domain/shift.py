"""Measure how different new pictures are from a model's training pictures, and where.

Both sets are embedded by the same network (a run's model: the features its classifier reads;
or a catalog backbone's pooled features), then compared three ways:

- **Maximum mean discrepancy** (Gretton et al., JMLR 2012): the unbiased estimate of MMD² with
  a Gaussian kernel ``k(a, b) = exp(-|a - b|² / (2 σ²))``, ``σ`` the median distance between
  all pictures of both sets (the median heuristic), and a permutation test's p-value: how often
  a random relabelling of the pooled pictures into two sets of the same sizes gives an MMD² at
  least as large, ``(1 + count) / (1 + permutations)``. The permutations reuse one kernel
  matrix (each is a pair of indicator vectors against it: one matrix product for all).
- **Proxy A-distance** (Ben-David et al., 2007): a logistic regression learns to tell the sets
  apart, scored by 5-fold cross-validated balanced accuracy; ``A = 2 (1 - 2 error)``, from 0
  (indistinguishable) to 2 (told apart every time).
- **Typical and unlike pictures**: each picture's mean kernel similarity to the *other* set;
  the highest are the most typical of it, the lowest the most unlike it.

Written here rather than taken from a library: the estimator and the test are a dozen lines of
numpy; the packages that have them (torch-two-sample, alibi-detect) are unmaintained or bring a
TensorFlow-sized stack. The tests check the estimator against a hand computation and the test's
false-positive rate on same-distribution samples.

The verdict is one sentence and a colour; it speaks of accuracy only when it was measured: the
run's held-out accuracy (``metrics.json``) against its accuracy on the new pictures, when those
are labelled with the run's classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.duplicates import copies_between
from ..data.facts import FileMemo, usable_facts
from ..data.images import ImageProblem
from ..data.loaders import build_transform, prepared
from ..errors import StudioError
from ..models.backbones import create_backbone, data_config
from ..models.kinds import LoadedRun, load_run
from ..runs import METRICS, read_optional
from .pictures import PictureSet

__all__ = [
    "Embedder", "median_bandwidth", "gaussian_gram", "mmd2_unbiased", "permutation_test",
    "proxy_a_distance", "measure_shift", "copies_of_training", "verdict", "map_2d", "TRUST_MIN",
    "COST_POINTS",
]  # fmt: skip

TRUST_MIN = 30  # pictures in each set below which the test's answer is not to be trusted
MAX_PER_SET = 500  # a seeded sample of each set above this (the kernel matrix grows as n²)
COST_POINTS = 5  # accuracy lost (points) that the verdict calls a cost
ALPHA = 0.05  # the test's level


# Embeddings by (picture file, network), in this process. Measuring a shift embeds the run's
# training and new pictures; adapting the run then measures the model it started from on the
# same pictures again, and reweighting embeds the training pictures to weigh them: each picture
# went through the same network two or three times. A network is known by its run folder and
# model files' times (or the backbone's name and weights), so a changed picture or a run
# trained again into its folder is embedded afresh. 1280 float64 features: ~40 MB at most.
REMEMBERED = FileMemo(4000)


def _run_identity(loaded: LoadedRun) -> tuple:
    """A run as the network it holds: its folder and its model files as they are now."""
    files = sorted(loaded.run_dir.glob("model*"))
    return ("run", str(loaded.run_dir.resolve()),
            *((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))  # fmt: skip


class Embedder:
    """A network that turns pictures into feature vectors (and, for a run, its logits).

    ``identity`` names the network for :data:`REMEMBERED` (None: nothing is remembered)."""

    def __init__(self, model: torch.nn.Module, transform, name: str, classes: list[str] | None,
                 identity: tuple | None = None):  # fmt: skip
        self.model, self.transform, self.name, self.classes = model.eval(), transform, name, classes
        self.identity = identity

    @classmethod
    def from_run(cls, run: str | Path | LoadedRun) -> Embedder:
        """A run's model, by folder, or already loaded (it is not built again)."""
        loaded = run if isinstance(run, LoadedRun) else load_run(run)
        loaded.kind.require("measuring a shift with its features", loaded.kind.gradients,
                            loaded.record.get("parent"))  # fmt: skip
        return cls(loaded.model, loaded.transform(), loaded.run_dir.name, loaded.labels,
                   _run_identity(loaded))  # fmt: skip

    @classmethod
    def from_backbone(cls, name: str, pretrained: bool = True) -> Embedder:
        model, info = create_backbone(name, pretrained=pretrained)
        identity = ("backbone", name, pretrained, info.source, str(info.path))
        return cls(model, build_transform(data_config(model), "none"), name, None, identity)

    @torch.no_grad()
    def embed(self, pictures: PictureSet, progress: Callable[[float], None] | None = None):
        """``(features, logits or None, the pictures kept)``; pictures that fail to decode are
        left out and named in the kept set's ``skipped``. Pictures this network embedded
        before (:data:`REMEMBERED`) are not embedded again."""
        rows: dict[int, tuple] = {}
        skipped: list[tuple[str, str]] = []
        batch: list[torch.Tensor] = []
        index: list[tuple[int, tuple | None]] = []  # (position, memo key as the file was read)

        def flush():
            # Channels-last input makes the convolutions run channels-last whatever the
            # weights' format: 1.9x faster for EfficientNet-Lite0 on this 2-core CPU.
            x = torch.stack(batch).contiguous(memory_format=torch.channels_last)
            pooled = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            feats = pooled.flatten(1).double().numpy()
            logits = (self.model.get_classifier()(pooled).double().numpy()
                      if self.classes is not None else None)  # fmt: skip
            for row, (i, key) in enumerate(index):  # copies: a row must not hold its batch
                rows[i] = (feats[row].copy(), None if logits is None else logits[row].copy())
                REMEMBERED.put(key, rows[i])
            batch.clear()
            index.clear()

        for i, path in enumerate(pictures.paths):
            key = None if self.identity is None else REMEMBERED.key(path, self.identity)
            known = REMEMBERED.get(key)
            try:
                if known is not None:
                    rows[i] = known
                else:
                    batch.append(prepared(path, self.transform))
                    index.append((i, key))
            except (ImageProblem, OSError) as exc:
                skipped.append((path, str(exc)))
            if len(batch) == 32:
                flush()
            if progress is not None:
                progress((i + 1) / len(pictures.paths))
        if batch:
            flush()
        if not rows:
            raise StudioError(f"none of the pictures in {pictures.root} could be read")
        kept = sorted(rows)
        logits = np.stack([rows[i][1] for i in kept]) if self.classes is not None else None
        return np.stack([rows[i][0] for i in kept]), logits, pictures.keep(kept, skipped)


# --------------------------------------------------------------------------- the statistics


def _sq_distances(z: np.ndarray) -> np.ndarray:
    sq = (z * z).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)


def median_bandwidth(z: np.ndarray) -> float:
    """The median Euclidean distance between distinct rows of ``z`` (the median heuristic)."""
    d = np.sqrt(_sq_distances(z)[np.triu_indices(len(z), k=1)])
    positive = d[d > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def gaussian_gram(z: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-_sq_distances(z) / (2 * sigma * sigma))


def _mmd2_many(gram: np.ndarray, in_x: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for each column of ``in_x`` (a 0/1 indicator of the first set among the
    pooled rows of ``gram``): one matrix product for every split at once."""
    k = gram - np.diag(np.diag(gram))  # the unbiased estimate leaves out k(z_i, z_i)
    in_y = 1.0 - in_x
    m, n = in_x.sum(0), in_y.sum(0)
    kx = k @ in_x
    sxx, sxy = (in_x * kx).sum(0), (in_y * kx).sum(0)
    syy = k.sum() - sxx - 2 * sxy
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, sigma: float | None = None) -> float:
    """The unbiased estimate of MMD² between the rows of ``x`` and of ``y`` (Gaussian kernel;
    ``sigma`` by the median heuristic on both sets when not given)."""
    z = np.concatenate([x, y]).astype(np.float64)
    sigma = sigma or median_bandwidth(z)
    in_x = np.zeros((len(z), 1))
    in_x[: len(x)] = 1.0
    return float(_mmd2_many(gaussian_gram(z, sigma), in_x)[0])


def permutation_test(
    x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0
) -> tuple[float, float, float]:
    """``(MMD², p-value, bandwidth)`` for the hypothesis that both sets come from one source."""
    if len(x) < 2 or len(y) < 2:
        raise StudioError("the shift test needs at least 2 pictures in each set")
    z = np.concatenate([x, y]).astype(np.float64)
    sigma = median_bandwidth(z)
    gram = gaussian_gram(z, sigma)
    rng = np.random.default_rng(seed)
    splits = np.zeros((len(z), permutations + 1))
    splits[: len(x), 0] = 1.0  # the observed split first
    for j in range(1, permutations + 1):
        splits[rng.permutation(len(z))[: len(x)], j] = 1.0
    values = _mmd2_many(gram, splits)
    p = (1 + int((values[1:] >= values[0]).sum())) / (1 + permutations)
    return float(values[0]), p, sigma


def proxy_a_distance(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """``(balanced accuracy of a domain classifier, proxy A-distance)``, cross-validated."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z = np.concatenate([x, y])
    d = np.r_[np.zeros(len(x)), np.ones(len(y))]
    folds = min(5, len(x), len(y))
    if folds < 2:
        return 0.5, 0.0
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000,
                                                             class_weight="balanced"))  # fmt: skip
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    accuracy = float(cross_val_score(clf, z, d, cv=cv, scoring="balanced_accuracy").mean())
    return accuracy, float(np.clip(2 * (1 - 2 * (1 - accuracy)), 0.0, 2.0))


# --------------------------------------------------------------------------- the whole measure


@dataclass
class Embedded:
    """One set's features (and logits) with the pictures they belong to."""

    features: np.ndarray
    logits: np.ndarray | None
    pictures: PictureSet


def _sample(pictures: PictureSet, limit: int, seed: int) -> PictureSet:
    if len(pictures.paths) <= limit:
        return pictures
    keep = sorted(np.random.default_rng(seed).permutation(len(pictures.paths))[:limit].tolist())
    return PictureSet(pictures.root, [pictures.paths[i] for i in keep],
                      [pictures.labels[i] for i in keep], pictures.skipped)  # fmt: skip


def _typical(source: Embedded, target: Embedded, sigma: float, top: int = 5) -> dict:
    """Per set, the pictures most typical of the other set and most unlike it."""
    z = np.concatenate([source.features, target.features])
    gram = gaussian_gram(z, sigma)
    m = len(source.features)
    out = {}
    for name, rows, others, pics in (
        ("source", slice(0, m), slice(m, None), source.pictures),
        ("target", slice(m, None), slice(0, m), target.pictures),
    ):
        score = gram[rows, others].mean(1)
        order = np.argsort(-score)
        listed = [[{"path": pics.paths[i], "similarity": round(float(score[i]), 4)} for i in idx]
                  for idx in (order[:top], order[::-1][:top])]  # fmt: skip
        out[name] = {"most_typical_of_other": listed[0], "most_unlike_other": listed[1]}
    return out


def _accuracy(embedded: Embedded, classes: list[str] | None) -> float | None:
    """Accuracy of the run's answers on a labelled set whose labels are the run's classes."""
    pics = embedded.pictures
    if embedded.logits is None or not classes or not pics.labelled:
        return None
    truth = np.array([classes.index(label) for label in pics.labels])
    return float((embedded.logits.argmax(1) == truth).mean())


def _per_class(source: Embedded, target: Embedded, permutations: int, seed: int) -> dict:
    """MMD² and p-value per class present (with at least 5 pictures) in both labelled sets."""
    if not (source.pictures.labelled and target.pictures.labelled):
        return {}
    out = {}
    for name in sorted(set(source.pictures.classes) & set(target.pictures.classes)):
        xs = source.features[[i for i, c in enumerate(source.pictures.labels) if c == name]]
        ys = target.features[[i for i, c in enumerate(target.pictures.labels) if c == name]]
        if len(xs) >= 5 and len(ys) >= 5:
            mmd, p, _ = permutation_test(xs, ys, permutations, seed)
            out[name] = {"mmd": mmd, "p_value": p, "n_source": len(xs), "n_target": len(ys)}
    return out


def verdict(p: float, accuracy: dict, n_source: int, n_target: int) -> tuple[str, str]:
    """``(colour, one sentence)``: green, amber or red, as the numbers say."""
    src, tgt = accuracy.get("source"), accuracy.get("target")
    measured = src is not None and tgt is not None
    costs = measured and (src - tgt) * 100 >= COST_POINTS
    acc = ""
    if measured:
        acc = f" (accuracy {src:.0%} on held-out training pictures, {tgt:.0%} on the new ones)"
    test = f"(p = {p:.3f})"
    if p >= ALPHA and not costs:
        colour, text = (
            "green",
            f"No real shift: the new pictures are not measurably different {test}{acc}.",
        )
    elif p < ALPHA and costs:
        colour, text = "red", f"A shift that costs accuracy: the new pictures differ {test}{acc}."
    elif measured:
        colour, text = "amber", f"A shift the model copes with {test}{acc}."
    else:
        colour, text = (
            "amber",
            (
                f"The new pictures differ from the training pictures {test}; "
                "label some of them to learn whether it costs accuracy."
            ),
        )
    fewest = min(n_source, n_target)
    if fewest < TRUST_MIN:
        text += (
            f" Only {fewest} pictures in one set: the test needs {TRUST_MIN} in each to be trusted."
        )
    return colour, text  # fmt: skip


def map_2d(x: np.ndarray, y: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Both sets' pictures as points on a plane (rows of ``x`` first): PCA, or t-SNE."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(np.concatenate([x, y]))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(z)
    if method == "tsne":
        perplexity = max(2.0, min(30.0, (len(z) - 1) / 3))
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    raise StudioError(f"unknown map {method!r}; choose pca or tsne")


def copies_of_training(new: PictureSet, old: PictureSet) -> list[dict]:
    """New pictures that are copies of training ones (identical files or near copies): they
    pull the two sets together, so a shift test that counts them says less than it should."""
    new_paths, new_facts = usable_facts(new.paths)
    old_paths, old_facts = usable_facts(old.paths)
    return [{"new": new_paths[i], "training": old_paths[j], "kind": kind}
            for i, j, kind in copies_between(new_facts, old_facts)]  # fmt: skip


def measure_shift(
    source: PictureSet,
    target: PictureSet,
    embedder: Embedder,
    *,
    run_dir: str | Path | None = None,
    permutations: int = 500,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    map_method: str = "pca",
) -> dict:
    """Everything the CLI and the Domain tab show about ``target`` against ``source``; the
    map's points (``map["points"]``) by ``map_method``, PCA or t-SNE."""
    if permutations < 1:
        raise StudioError("the test needs at least 1 permutation")
    unknown = set(target.classes) - set(embedder.classes or target.classes)
    if target.labelled and unknown:
        raise StudioError(
            f"the new pictures have classes the run does not know: {', '.join(sorted(unknown))}"
        )
    sets = {}
    for i, (name, pics) in enumerate((("target", target), ("source", source))):  # new ones first:
        # an unreadable or mislabelled new set is refused before the longer work
        step = (lambda f, i=i: progress((i + f) / 2)) if progress else None
        sample = _sample(pics, MAX_PER_SET, seed)
        sets[name] = Embedded(*embedder.embed(sample, step))
    xs, ys = sets["source"].features, sets["target"].features
    mmd, p, sigma = permutation_test(xs, ys, permutations, seed)
    domain_accuracy, a_distance = proxy_a_distance(xs, ys, seed)
    held_out = read_optional(Path(run_dir), METRICS) if run_dir else None
    accuracy = {
        "source": held_out.get("accuracy") if isinstance(held_out, dict) else None,
        "target": _accuracy(sets["target"], embedder.classes),
    }
    colour, sentence = verdict(p, accuracy, len(xs), len(ys))
    return {
        "mmd": mmd, "p_value": p, "a_distance": a_distance, "domain_accuracy": domain_accuracy,
        "n_source": len(xs), "n_target": len(ys), "bandwidth": sigma, "permutations": permutations,
        "per_class": _per_class(sets["source"], sets["target"], min(permutations, 200), seed),
        "accuracy": accuracy, "verdict": colour, "sentence": sentence,
        "trusted": min(len(xs), len(ys)) >= TRUST_MIN, "features_from": embedder.name,
        "typical": _typical(sets["source"], sets["target"], sigma),
        "skipped": {k: v.pictures.skipped for k, v in sets.items()},
        "copies": copies_of_training(sets["target"].pictures, sets["source"].pictures),
        "map": {"method": map_method, "points": map_2d(xs, ys, map_method, seed).round(4).tolist(),
                "paths": sets["source"].pictures.paths + sets["target"].pictures.paths,
                "labels": sets["source"].pictures.labels + sets["target"].pictures.labels},
    }  # fmt: skip
