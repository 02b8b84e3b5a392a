"""The pretrained backbone's features computed in the same decode as the data check.

``studio train DATA`` checks every picture (size, hashes for the duplicates, whether it decodes
at all: :mod:`studio.data.facts`) and then, for a head on a frozen backbone, computes the
backbone's pooled features of each plain picture (:mod:`studio.training.cache`). Done apart,
each picture is read and decoded twice. :class:`PooledFeatures` is a
:class:`~studio.data.facts.Looker`: each of the check's worker processes loads the backbone
once and runs it on the pictures it has just decoded, and the calling process keeps the
features in the feature memo (:mod:`studio.training.feature_memo`), where the run's training
finds them (and checks two against its own pass before using any). The features cannot be
put straight into the run's feature store: that store is laid out by split, and the split is
only known once the whole check has found the duplicates.

A JPEG is decoded for its facts at the size EfficientNet-Lite0's preparation needs (256
pixels a side, :data:`~studio.data.facts.FACTS_DECODE`); a backbone that needs another size
decodes a JPEG again at its own (other formats decode the same whatever the size asked).
Pictures whose features the memo already holds are not run through the backbone.

The check cannot know which pictures the split will hold back, so it computes the test
pictures' features too; a run that keeps the whole pretrained backbone frozen (Quick) is
measured on them at its end (:func:`held_out_probabilities`) instead of decoding and running
its test pictures through the backbone a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.facts import FACTS_DECODE, PictureFacts
from ..data.images import ImageProblem
from .config import TrainConfig
from .feature_memo import FeatureMemo

if TYPE_CHECKING:
    from ..data.dataset import Sample
    from .loop import RunSetup

__all__ = ["PooledFeatures", "held_out_probabilities"]

# Worker processes that each hold a backbone (EfficientNet-Lite0 with a batch of 32 on its way
# through: about 0.4 GB a process); on a 2-core laptop there are two.
MOST_PROCESSES = 4


@dataclass
class PooledFeatures:
    """The pretrained ``backbone``'s pooled features (the classifier's input) of each decoded
    picture, kept in its :class:`FeatureMemo`. ``computed``: pictures run through it here."""

    backbone: str
    weights_file: str | None = None
    data_config: dict = field(default_factory=dict)  # the backbone's preprocessing
    processes: int = MOST_PROCESSES
    computed: int = 0
    _model: object = field(default=None, repr=False)
    _transform: object = field(default=None, repr=False)
    _memo: FeatureMemo | None = field(default=None, repr=False)

    @classmethod
    def for_config(cls, cfg: TrainConfig) -> PooledFeatures | None:
        """The pass for ``cfg``'s backbone when its training reads these features and the
        weights are a file here (None otherwise: nothing to share)."""
        from ..models.backbones import weights_info

        if not cfg.reads_pooled_features():
            return None
        if weights_info(cfg.backbone, cfg.weights_file).path is None:
            return None  # no weights, or weights still to download: the training says why
        return cls(cfg.backbone, cfg.weights_file)

    def ready(self) -> None:
        """In the calling process, before any worker starts: the backbone built once, so that
        weights that cannot be loaded are refused in one sentence
        (:class:`~studio.models.backbones.BackboneError`), and its preprocessing read."""
        from ..models.backbones import create_backbone, data_config

        if not self.data_config:
            model, _ = create_backbone(self.backbone, weights_file=self.weights_file)
            self.data_config = data_config(model)

    def memo(self) -> FeatureMemo:
        """The memo that :func:`studio.training.train` reads for this backbone."""
        if self._memo is None:
            from ..models.backbones import weights_info

            self.ready()
            info = weights_info(self.backbone, self.weights_file)
            self._memo = FeatureMemo(self.backbone, info, self.data_config)
        return self._memo

    def __getstate__(self) -> dict:
        """What a worker process is sent: the names, not a model."""
        return {**self.__dict__, "_model": None, "_transform": None, "_memo": None}

    def start(self) -> None:
        """In a worker: one thread (the worker processes share the cores), the backbone."""
        import torch

        from ..data.loaders import build_transform
        from ..models.backbones import create_backbone

        torch.set_num_threads(1)
        model, _ = create_backbone(self.backbone, weights_file=self.weights_file)
        self._model = model.eval().to(memory_format=torch.channels_last)
        self._transform = build_transform(self.data_config, "none")

    def look(self, decoded: list) -> list[np.ndarray | None]:
        """In a worker: the features of each decoded picture the memo does not hold."""
        import torch

        inputs, rows = [], []
        for row, item in enumerate(decoded):
            if item is None or self.memo().holds(item[1].sha1):
                continue
            try:
                inputs.append(self._input(*item))
            except (ImageProblem, OSError):
                continue  # changed since its check: the training will say so
            rows.append(row)
        out: list[np.ndarray | None] = [None] * len(decoded)
        if inputs:
            x = torch.stack(inputs).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                pooled = self._model.forward_head(self._model.forward_features(x), pre_logits=True)
            for row, vector in zip(rows, pooled.flatten(1).float().numpy()):
                out[row] = vector.copy()
        return out

    def _input(self, path: Path, facts: PictureFacts, img, size: tuple[int, int]):
        """The model's input from the check's decode when the model would decode the file the
        same way (see the module's docstring), else from its own decode."""
        from ..data.loaders import prepared, source_side

        side = source_side(self._transform)
        whole = img.size == size  # not decoded smaller: any larger size decodes it whole too
        if side == FACTS_DECODE or (whole and (side is None or side >= FACTS_DECODE)):
            return self._transform(img)
        return prepared(path, self._transform)

    def keep(self, facts: list, seen: list) -> None:
        """In the calling process: the features found, into the memo."""
        found = [(f.sha1, vector) for f, vector in zip(facts, seen) if vector is not None]
        if found:
            self.memo().put_many([sha1 for sha1, _ in found], np.stack([v for _, v in found]))
            self.computed += len(found)


def held_out_probabilities(run: RunSetup, samples: Sequence[Sample]) -> np.ndarray | None:
    """The finished model's probabilities for ``samples`` from the memo's features, when the
    whole run kept the pretrained backbone frozen (the classifier then reads exactly those
    features) and the memo holds every picture's; None otherwise, or when two of them do not
    give the model's own answer (then the pictures are run through the model as usual)."""
    import torch

    from ..data.facts import facts_of
    from ..data.loaders import prepared
    from ..inspection.evaluate import probabilities
    from ..models.freeze import HEAD_ONLY

    cfg = run.cfg
    frozen = str(cfg.freeze).strip().lower() in HEAD_ONLY
    if not (samples and frozen and cfg.pretrained and run.weights.available):
        return None
    found = FeatureMemo(cfg.backbone, run.weights, run.data_config).get_many(
        [facts_of(s.path).sha1 for s in samples]
    )
    if len(found) < len(samples):
        return None
    features = torch.from_numpy(np.stack([found[i] for i in range(len(samples))]))
    model = run.model.eval()
    with torch.no_grad():
        logits = model.get_classifier()(features.to(run.device)).float()
        two = torch.stack([prepared(s.path, run.eval_tf) for s in samples[:2]]).to(run.device)
        own = model(two).float()
    if not torch.allclose(own, logits[: len(two)], rtol=1e-3, atol=1e-3):
        return None
    return probabilities(logits, run.dataset.multilabel, run.dataset.tasks).cpu().numpy()
