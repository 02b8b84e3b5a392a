"""Named training recipes (quick, balanced, thorough) and the automatic choice between them.

The same presets in the CLI (``--preset``) and the app (the Train tab's radio); each one is a
set of :class:`~studio.training.train.TrainConfig` fields, printed when used, so a person can see what
it set and change any of it.

- **quick**: the backbone stays frozen; its features are computed once and the last layer is
  solved exactly (:mod:`studio.training.head_fit`): a logistic-regression probe, in about one forward
  pass over the pictures.
- **balanced** and **thorough**: the recipe the transfer-learning literature uses for few
  pictures: the head is solved first on the cached features, then the top of the network is
  fine-tuned (the last group, or the last three) with layer-wise learning-rate decay, L2-SP
  (weight decay towards the pretrained weights, Li et al. 2018) instead of decay towards zero,
  augmentation, and early stopping on the validation pictures. The frozen part is still cached.
- **auto** picks from the number of pictures per class and this computer's measured speed for
  the backbone, and says why: Quick below :data:`FINE_TUNE_MIN_PER_CLASS` training pictures in
  some class (there, fine-tuning measured no better than the exact last layer: Fashion-MNIST
  and digits at 25 a class, ``benchmarks/bench_defaults.py``), else Balanced when its estimated
  time fits :data:`AUTO_BUDGET_S` (Fashion-MNIST at 85 a class: +1.3 points), else Quick.
  Thorough is never chosen automatically: it has not beaten Balanced on any measured dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PRESETS",
    "CHOICES",
    "Preset",
    "AUTO_BUDGET_S",
    "FINE_TUNE_MIN_PER_CLASS",
    "apply_preset",
    "lay_over",
    "choose_preset",
    "estimate_seconds",
]

# The longest a run chosen automatically should take: a classroom can wait five minutes.
AUTO_BUDGET_S = 300.0
# Fewer training pictures than this in some class: fine-tuning is not chosen automatically.
FINE_TUNE_MIN_PER_CLASS = 50

_FINE_TUNE = dict(
    head_solver="exact",
    lr=5e-4,
    layer_decay=0.7,
    weight_decay=0.0,  # L2-SP pulls towards the pretrained weights instead
    l2sp=0.01,
    label_smoothing=0.0,  # keeps validation loss comparable with the exactly fitted head's
    schedule="cosine",
    warmup_epochs=1.0,
)


@dataclass(frozen=True)
class Preset:
    """A named recipe: plain words for the app and the settings it applies."""

    name: str
    title: str
    summary: str
    settings: dict
    views: int  # augmented views cached per training picture
    tail_share: float  # cost of one fine-tuning epoch, as a share of a forward pass

    def describe(self) -> str:
        """What it sets, as one line (the CLI prints it; the app shows it)."""
        return ", ".join(f"{k}={v}" for k, v in self.settings.items())


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "quick",
        "Quick",
        "Only the last layer learns, solved exactly on features computed once: the fastest, "
        "and as good as a linear probe.",
        dict(
            freeze="backbone",
            head_solver="exact",
            epochs=5,
            head_epochs=0,
            augment="none",
            label_smoothing=0.0,
            patience=0,
        ),
        views=1,
        tail_share=0.0,
    ),
    "balanced": Preset(
        "balanced",
        "Balanced",
        "The last layer is solved first, then the last block of the network is fine-tuned "
        "gently (kept close to what it learnt on ImageNet), with light augmentation.",
        dict(freeze="last:1", epochs=13, head_epochs=3, augment="light", patience=4, **_FINE_TUNE),
        views=3,
        tail_share=0.3,
    ),
    "thorough": Preset(
        "thorough",
        "Thorough",
        "The last layer is solved first, then the top three blocks are fine-tuned with "
        "stronger augmentation and more epochs: the best results, the slowest.",
        dict(freeze="last:3", epochs=23, head_epochs=3, augment="strong", patience=6, **_FINE_TUNE),
        views=3,
        tail_share=0.8,
    ),
}


def estimate_seconds(preset: Preset, n_train: int, n_other: int, ms_per_image: float) -> float:
    """Seconds a run of ``preset`` should take: the cached forward passes (one per picture
    and view) plus the fine-tuning epochs over the training pictures' cached views."""
    s = preset.settings
    fine_epochs = s["epochs"] - s["head_epochs"] if preset.tail_share else 0
    passes = preset.views * n_train + n_other + fine_epochs * n_train * preset.tail_share
    return passes * ms_per_image / 1000


def choose_preset(
    n_train: int, n_other: int, per_class_min: int, ms_per_image: float
) -> tuple[str, str]:
    """``(preset name, why)``: Balanced when every class has enough pictures for fine-tuning
    to pay and its estimate fits :data:`AUTO_BUDGET_S`, else Quick (see the module's notes).

    Deterministic for a given dataset and speed (the speed is measured once and remembered).
    """
    if per_class_min < 5:
        return "quick", (
            f"one class has only {per_class_min} training picture(s): fine-tuning would "
            "overfit them, so only the last layer learns"
        )
    if per_class_min < FINE_TUNE_MIN_PER_CLASS:
        return "quick", (
            f"the smallest class has {per_class_min} training pictures; below "
            f"{FINE_TUNE_MIN_PER_CLASS} a class, fine-tuning measured no better than solving "
            "the last layer exactly, which is faster"
        )
    seconds = estimate_seconds(PRESETS["balanced"], n_train, n_other, ms_per_image)
    if seconds <= AUTO_BUDGET_S:
        return "balanced", (
            f"at least {FINE_TUNE_MIN_PER_CLASS} training pictures a class ({n_train} in all) "
            f"at {ms_per_image:.0f} ms each on this computer: Balanced should take about "
            f"{_words(seconds)}, within the {_words(AUTO_BUDGET_S)} budget"
        )
    return "quick", (
        f"{n_train} training pictures at {ms_per_image:.0f} ms each: Balanced would take about "
        f"{_words(seconds)}, more than the {_words(AUTO_BUDGET_S)} budget"
    )


def _words(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


CHOICES = ("auto", *PRESETS, "custom")


def apply_preset(config, name: str, dataset, ms_per_image: float | None = None):
    """``(config, note)``: ``config`` with the preset's settings laid over it (``custom`` keeps
    it as it is; ``auto`` chooses first), and a line saying what was set and why.

    ``ms_per_image`` is this computer's speed for the backbone; measured (and remembered) when
    not given and not known.
    """
    from dataclasses import replace

    if name not in CHOICES:
        raise ValueError(f"preset must be one of {', '.join(CHOICES)}")
    if name == "custom":
        return replace(config, preset="custom"), "custom settings"
    why = ""
    if name == "auto":
        name, why = _auto(config.backbone, dataset, ms_per_image)
    preset = PRESETS[name]
    note = f"preset {name}" + (f" (chosen automatically: {why})" if why else "")
    note += f": {preset.describe()}"
    return replace(config, **preset.settings, preset=name), note


def lay_over(config, given: dict):
    """``(config, note)``: settings a person gave by hand laid over a preset's config.

    When they shorten the run below the preset's head-only epochs (``--epochs 2`` with
    Balanced's three), the head phase is shortened to fit and the note says so; head epochs
    given by hand are left for the config's check to judge.
    """
    from dataclasses import replace

    config = replace(config, **given)
    note = "; then, as given: " + ", ".join(f"{k}={v}" for k, v in given.items()) if given else ""
    if "head_epochs" not in given and config.head_epochs >= config.epochs:
        config = replace(config, head_epochs=config.epochs - 1)
        note += f"; head_epochs={config.head_epochs} to fit in {config.epochs} epochs"
    return config, note


def possible_configs(config, name: str, given: dict) -> list:
    """Every config that ``name`` laid over ``config``, then ``given`` (:func:`lay_over`),
    can give, before the data is read: one, or for ``auto`` one per preset it may choose
    (Quick or Balanced). What the data check can prepare for all of them is worth doing."""
    from dataclasses import replace

    if name not in CHOICES:
        raise ValueError(f"preset must be one of {', '.join(CHOICES)}")
    if name == "custom":
        return [config]
    names = ["quick", "balanced"] if name == "auto" else [name]
    return [lay_over(replace(config, **PRESETS[n].settings, preset=n), given)[0] for n in names]


def _auto(backbone: str, dataset, ms_per_image: float | None) -> tuple[str, str]:
    from collections import Counter

    from ..models.backbones import get_spec, known_speeds, measure_speed

    get_spec(backbone)  # an unknown name is bad input, said before anything is measured
    if ms_per_image is None:
        ms_per_image = known_speeds().get(backbone) or measure_speed(backbone)
    counts = Counter(label for s in dataset.train for label in s.labels)
    per_class_min = min(counts.get(i, 0) for i in range(len(dataset.classes)))
    n_other = len(dataset.val) + len(dataset.test)
    return choose_preset(len(dataset.train), n_other, per_class_min, ms_per_image)
