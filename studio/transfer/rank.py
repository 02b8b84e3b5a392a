"""Which backbone to start from: rank the catalog on a person's own pictures before training.

Each backbone whose pretrained weights are here now looks at a bounded, seeded sample of the
training pictures with its weights frozen; its pooled features are then scored two ways:

- **LogME** (:mod:`studio.transfer.logme`): how well a linear model on the features can
  explain the labels, by its maximised evidence; cheap, no training, and shown by its authors
  to follow fine-tuned accuracy across model hubs;
- a **linear probe**: a logistic regression's accuracy in k-fold cross-validation on the same
  features, a second opinion a person can read as a percentage.

The time each backbone took and its size are reported beside the scores, and one backbone is
picked as the best trade-off (:func:`best_tradeoff`): quality first, then speed when a faster
one is about as good. The ranking's value is measured, not assumed: ``benchmarks/bench_rank.py``
fine-tunes every offline backbone and reports the rank correlation with these scores.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.dataset import Dataset, Sample, load_dataset
from ..errors import StudioError
from .logme import logme

__all__ = ["BackboneScore", "rank_backbones", "score_each", "score_backbone", "best_tradeoff", "offline_backbones",
           "probe_accuracy", "NEAR_PROBE"]  # fmt: skip

MAX_PICTURES = 300  # the sample each backbone looks at: ranking should take seconds, not minutes
NEAR_PROBE = 0.02  # probe accuracies this close are "about as good" for the trade-off


@dataclass
class BackboneScore:
    """One backbone's scores on the person's pictures."""

    backbone: str
    title: str
    logme: float
    probe_accuracy: float | None  # None for multi-label pictures
    seconds: float  # building the model and looking at the sample
    ms_per_image: float  # looking only, per picture
    params_m: float
    pictures: int

    def to_dict(self) -> dict:
        return asdict(self)


def offline_backbones() -> list[str]:
    """Catalog backbones whose pretrained weights are available now, in catalog order."""
    from ..models.backbones import CATALOG, weights_info

    return [name for name in CATALOG if weights_info(name).available]


def _sample(samples: Sequence[Sample], limit: int, seed: int) -> list[Sample]:
    """At most ``limit`` samples, the classes taking turns (so a sample keeps every class)."""
    if len(samples) <= limit:
        return list(samples)
    by_class: dict[tuple, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.labels, []).append(s)
    rng = random.Random(seed)
    for group in by_class.values():
        rng.shuffle(group)
    picked: list[Sample] = []
    while len(picked) < limit:
        for group in by_class.values():
            if group and len(picked) < limit:
                picked.append(group.pop())
    return picked


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Mean accuracy of a logistic regression on standardised features, stratified k-fold
    (k = 5, or fewer when a class has fewer pictures; at least 2)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(5, np.bincount(labels).min()))
    if folds < 2:
        raise StudioError("every class needs at least 2 training pictures to rank backbones")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, features, labels, cv=split).mean())


def _targets(samples: list[Sample], classes: int, multilabel: bool) -> np.ndarray:
    """Class indices, or a 0/1 matrix (pictures x classes) for multi-label pictures."""
    if not multilabel:
        return np.array([s.labels[0] for s in samples])
    y = np.zeros((len(samples), classes))
    for i, s in enumerate(samples):
        y[i, list(s.labels)] = 1.0
    return y


def _probe(features: np.ndarray, y: np.ndarray, dataset: Dataset, seed: int) -> float | None:
    """The linear probe's accuracy; with several single-label tasks, their mean (LogME reads
    every task's one-hot block together: its evidence is a mean over label columns anyway)."""
    tasks = dataset.tasks
    if tasks is not None and not any(t.multilabel for t in tasks):
        return float(
            np.mean([probe_accuracy(features, y[:, t.columns].argmax(1), seed) for t in tasks])
        )
    return None if dataset.multilabel else probe_accuracy(features, y, seed)


def score_backbone(
    name: str, dataset: Dataset, samples: list[Sample], seed: int = 0, pretrained: bool = True
) -> BackboneScore:
    """One backbone's :class:`BackboneScore` on ``samples`` of ``dataset`` (with random
    weights when not ``pretrained``: the floor its pretraining is measured against)."""
    from ..domain.pictures import PictureSet
    from ..domain.shift import Embedder
    from ..models.backbones import get_spec

    start = time.perf_counter()
    embedder = Embedder.from_backbone(name, pretrained=pretrained)
    built = time.perf_counter()
    pictures = PictureSet(dataset.root, [s.path for s in samples], [None] * len(samples))
    features, _, kept = embedder.embed(pictures)
    looked = time.perf_counter()
    if pretrained:
        _remember(name, embedder, kept.paths, features)
    index = {p: i for i, p in enumerate(pictures.paths)}
    kept_samples = [samples[index[p]] for p in kept.paths]
    y = _targets(kept_samples, len(dataset.classes), dataset.multilabel)
    probe = _probe(features, y, dataset, seed)
    spec = get_spec(name)
    return BackboneScore(
        backbone=name, title=spec.title, logme=logme(features, y), probe_accuracy=probe,
        seconds=round(looked - start, 2), params_m=round(spec.params / 1e6, 2),
        ms_per_image=round((looked - built) * 1000 / len(kept_samples), 1),
        pictures=len(kept_samples),
    )  # fmt: skip


def score_each(
    data: str | Path | Dataset,
    backbones: Sequence[str] | None = None,
    *,
    max_pictures: int = MAX_PICTURES,
    seed: int = 0,
) -> Iterator[tuple[int, int, BackboneScore]]:
    """``(done, total, score)`` for each backbone (default: every one with weights here) in
    turn, on a seeded sample of the training pictures of ``data``: for a caller that shows
    each as it comes and may stop between two."""
    dataset = data if isinstance(data, Dataset) else load_dataset(data, seed=seed)
    names = list(backbones) if backbones else offline_backbones()
    _check_backbones(names)
    samples = _sample(dataset.train, max_pictures, seed)
    for i, name in enumerate(names):
        yield i + 1, len(names), score_backbone(name, dataset, samples, seed)


def _remember(name: str, embedder, paths: list[str], features: np.ndarray) -> None:
    """Keep the features for the training of the chosen backbone (it will not compute them
    again: :mod:`studio.training.feature_memo`)."""
    from ..data.facts import facts_of
    from ..models.backbones import data_config, weights_info
    from ..training.feature_memo import FeatureMemo

    memo = FeatureMemo(name, weights_info(name), data_config(embedder.model))
    memo.put_many([facts_of(p).sha1 for p in paths], features)


def rank_backbones(
    data: str | Path | Dataset,
    backbones: Sequence[str] | None = None,
    *,
    max_pictures: int = MAX_PICTURES,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[BackboneScore]:
    """:func:`score_each`, best LogME first. ``progress(done, total, name)`` follows it;
    ``stop()`` returning True ends the ranking after the current backbone."""
    scores = []
    for done, total, score in score_each(data, backbones, max_pictures=max_pictures, seed=seed):
        scores.append(score)
        if progress is not None:
            progress(done, total, score.backbone)
        if stop is not None and stop():
            break
    return sorted(scores, key=lambda s: -s.logme)


def _check_backbones(names: list[str]) -> None:
    """Refuse, in one sentence, an empty list or a backbone without weights here."""
    from ..models.backbones import get_spec, weights_info

    if not names:
        raise StudioError("no backbone has pretrained weights on this computer to rank")
    for name in names:
        spec = get_spec(name)  # an unknown name is refused here
        if not weights_info(name).available:
            raise StudioError(f"{spec.title} has no pretrained weights here: it cannot be ranked")


def best_tradeoff(scores: Sequence[BackboneScore]) -> BackboneScore:
    """The backbone to pre-select: among those whose probe accuracy is within
    :data:`NEAR_PROBE` of the best (all of them for multi-label pictures), the one with the
    best LogME unless one at least 1.5x faster per picture is there too: then the fastest."""
    if not scores:
        raise StudioError("nothing was ranked")
    probes = [s.probe_accuracy for s in scores if s.probe_accuracy is not None]
    top = max(probes) if probes else None
    good = [s for s in scores if top is None or s.probe_accuracy >= top - NEAR_PROBE]
    best = max(good, key=lambda s: s.logme)
    fastest = min(good, key=lambda s: s.ms_per_image)
    return fastest if fastest.ms_per_image * 1.5 <= best.ms_per_image else best
