"""TrainConfig: everything that defines a training run, checked, and saved as ``config.json``.

Its own module because the training loop (:mod:`studio.training.loop`), the fine-tuning recipe
(:mod:`studio.training.train`), the presets, the CLI and the app all build or read one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..data.loaders import AUGMENT_PRESETS
from ..errors import StudioError
from ..models.backbones import DEFAULT_BACKBONE

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``config.json`` so a run can be repeated exactly."""

    data: str = ""
    out: str = "runs/run"
    backbone: str = DEFAULT_BACKBONE
    weights_file: str | None = None
    pretrained: bool = True
    freeze: str = "backbone"
    # How a head on a frozen backbone learns: "exact" solves it (logistic regression to
    # convergence, weight decay by cross-validation: studio.training.head_fit); "sgd" runs epochs.
    head_solver: str = "exact"
    preset: str = (
        ""  # the preset these settings came from (studio.training.presets), for the record
    )
    epochs: int = 10
    head_epochs: int = 0  # staged unfreezing: train only the head this many epochs first
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9
    weight_decay: float = 0.01
    layer_decay: float = 0.75  # layer-wise LR decay; 1.0 = same LR everywhere
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    l2sp: float = 0.0  # pull fine-tuned weights towards their pretrained values (L2-SP)
    augment: str = "light"  # none | light | strong
    patience: int = 5  # early stopping: epochs without a better val loss; 0 = off
    threshold: float = 0.5  # multi-label decision threshold
    # A CSV with one column per task: the columns to learn ("material,colour"); "" = every
    # label column. How their losses combine: "equal" or "uncertainty" (studio.training.multitask).
    tasks: str = ""
    task_weights: str = "equal"
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    cache: bool = True
    cache_views: int = 0  # augmented views stored per image when caching; 0 = auto
    cache_memory_mb: int = 2048
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA
    channels_last: bool = True  # memory format for CUDA and CPU
    workers: int = -1  # image-decoding processes; -1 = auto
    resume: bool = False

    def validate(self) -> TrainConfig:
        """Raise :class:`StudioError` with a plain reason for any value that cannot work
        (a resumed run's ``config.json`` is checked too: it may have been edited)."""
        for f in fields(self):
            wanted = _FIELD_TYPES.get(str(f.type))
            value = getattr(self, f.name)
            if wanted and (
                not isinstance(value, wanted) or isinstance(value, bool) != (wanted is bool)
            ):
                raise StudioError(f"{f.name} must be {_TYPE_WORDS[str(f.type)]}, not {value!r}")
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (
                0 <= self.head_epochs < self.epochs or self.head_epochs == 0,
                "head epochs must be fewer than epochs",
            ),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (0 < self.lr < 10, "learning rate must be between 0 and 10"),
            (self.optimizer in ("adamw", "sgd"), "optimizer must be adamw or sgd"),
            (self.head_solver in ("exact", "sgd"), "head solver must be exact or sgd"),
            (
                self.schedule in ("cosine", "onecycle", "constant"),
                "schedule must be cosine, onecycle or constant",
            ),
            (0 < self.layer_decay <= 1, "layer decay must be in (0, 1]"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (
                self.augment in AUGMENT_PRESETS,
                f"augment must be one of {', '.join(AUGMENT_PRESETS)}",
            ),
            (
                0 <= self.val_fraction < 1
                and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1,
                "split fractions must sum below 1",
            ),
            (self.weight_decay >= 0 and self.l2sp >= 0, "weight decay and L2-SP must be >= 0"),
            (0 < self.threshold < 1, "threshold must be between 0 and 1"),
            (
                self.task_weights in ("equal", "uncertainty"),
                "task weights must be equal or uncertainty",
            ),
            (
                not self.tasks or all(self.task_columns()),
                "tasks must be column names separated by commas, such as material,colour",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise StudioError(message)
        return self

    def reads_pooled_features(self) -> bool:
        """Whether some phase learns from the pretrained backbone's pooled features of the
        plain pictures, cached: a head on the whole frozen backbone (``freeze`` says so, or
        head-only epochs come first, as :func:`studio.training.train` runs its phases)."""
        from ..models.freeze import HEAD_ONLY

        frozen = str(self.freeze).strip().lower() in HEAD_ONLY or self.head_epochs > 0
        return self.pretrained and self.cache and frozen

    def task_columns(self) -> list[str] | None:
        """The CSV columns asked for as tasks, or None for the data's own (all of them)."""
        return [c.strip() for c in self.tasks.split(",")] if self.tasks.strip() else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_FIELD_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str}
_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text"}
