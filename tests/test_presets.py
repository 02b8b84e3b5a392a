"""The exact head fit, the presets and the automatic choice (issue 14)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio import events as ev
from studio.errors import StudioError
from studio.training.head_fit import choose_l2, fit_rounds
from studio.training.presets import CHOICES, PRESETS, apply_preset, choose_preset
from studio.training.train import TrainConfig, load_training_data, train

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import real_datasets  # noqa: E402


def test_the_exact_head_is_scikit_learns_logistic_regression():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x, y = x[:600] / 16, y[:600]
    c = 0.3
    reference = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(x, y)
    *_, fit = fit_rounds(
        torch.tensor(x, dtype=torch.float32), torch.tensor(y), 10, 1 / (c * len(y)), rounds=4
    )
    assert np.abs(fit.weight.numpy() - reference.coef_).max() < 0.01 * np.abs(reference.coef_).max()
    assert np.abs(fit.bias.numpy() - reference.intercept_).max() < 0.05


def test_weight_decay_is_chosen_by_cross_validation_and_repeats():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 20, generator=g)
    y = torch.arange(3).repeat_interleave(30)
    noisy = centres[y] + 3.0 * torch.randn(90, 20, generator=g)  # overlapping classes
    clean = centres[y] + 0.05 * torch.randn(90, 20, generator=g)  # separable ones
    l2_noisy, scores = choose_l2(noisy, y, 3, seed=1)
    assert len(scores) > 5 and l2_noisy == min(scores, key=scores.get)
    assert choose_l2(noisy, y, 3, seed=1)[0] == l2_noisy
    assert choose_l2(clean, y, 3, seed=1)[0] < l2_noisy  # less noise, less decay needed


def _probe_accuracy(dataset) -> float:
    """A scikit-learn probe (C by 5-fold cross-validation) on the run's own split."""
    from sklearn.linear_model import LogisticRegressionCV

    from studio.data.loaders import ImageSamples, build_transform, image_loader
    from studio.models.backbones import create_backbone, data_config

    model, _ = create_backbone("tf_efficientnet_lite0", len(dataset.classes))
    model.eval()
    tf = build_transform(data_config(model))
    feats = {}
    with torch.inference_mode():
        for split in ("train", "test"):
            samples = ImageSamples(dataset.splits[split], tf, len(dataset.classes), False)
            xs, ys = zip(*[(model.forward_head(model.forward_features(x), pre_logits=True), y)
                           for x, y in image_loader(samples, 32)])  # fmt: skip
            feats[split] = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    probe = LogisticRegressionCV(Cs=10, cv=5, max_iter=5000).fit(*feats["train"])
    return float(probe.score(*feats["test"]))


# The digits (250 pictures, 51 s here) run with the slow tests: the default run keeps the example.
@pytest.mark.parametrize("which", ["example", pytest.param("digits", marks=pytest.mark.slow)])
def test_the_default_run_ties_or_beats_a_linear_probe(which, example, tmp_path):
    data = example if which == "example" else real_datasets.digits(tmp_path / "d", 15, 10)
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"))  # the library's defaults
    events = list(train(config))
    finished = events[-1]
    assert finished.kind == "finished"
    assert any("fitting the last layer exactly" in e.message for e in events if e.kind == "notice")
    probe = _probe_accuracy(load_training_data(config))
    assert finished.metrics["accuracy"] >= probe, (finished.metrics["accuracy"], probe)


def test_each_preset_sets_what_it_says(small_example):
    dataset = load_training_data(TrainConfig(data=str(small_example)))
    for name, preset in PRESETS.items():
        config, note = apply_preset(TrainConfig(data=str(small_example)), name, dataset)
        assert config.preset == name
        for key, value in preset.settings.items():
            assert getattr(config, key) == value
            assert f"{key}={value}" in note
        config.validate()
    custom, note = apply_preset(TrainConfig(epochs=7), "custom", dataset)
    assert custom.epochs == 7 and custom.preset == "custom"


def test_the_automatic_choice_is_deterministic_and_says_why(small_example):
    dataset = load_training_data(TrainConfig(data=str(small_example)))
    first = apply_preset(TrainConfig(), "auto", dataset, ms_per_image=30.0)
    assert first == apply_preset(TrainConfig(), "auto", dataset, ms_per_image=30.0)
    assert first[0].preset == "quick" and "chosen automatically" in first[1]
    assert "smallest class has 8 training pictures" in first[1]  # 12 less validation, test
    # Under 50 a class: the exact head (fine-tuning measured no better there); enough pictures
    # on a fast computer: Balanced; many on a slow one: only the last layer; a class with 3
    # pictures: never fine-tune. Thorough is not an automatic choice.
    assert choose_preset(300, 100, 30, 30.0)[0] == "quick"
    name, why = choose_preset(1500, 500, 150, 30.0)
    assert name == "balanced" and "budget" in why
    name, why = choose_preset(50_000, 10_000, 5000, 30.0)
    assert name == "quick" and "more than" in why
    name, why = choose_preset(300, 100, 3, 1.0)
    assert name == "quick" and "only 3" in why


def test_the_apps_presets_are_the_clis():
    from studio.cli import build_parser
    from studio.ui.train_tab import CUSTOM, PRESET_NAMES

    app = [*PRESET_NAMES.values(), CUSTOM.lower()]
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    cli = next(a.choices for a in train_parser._actions if a.dest == "preset")
    assert app == list(cli) == list(CHOICES)


def test_a_staged_preset_solves_the_head_then_fine_tunes_and_resumes(small_example, tmp_path):
    dataset = load_training_data(TrainConfig(data=str(small_example)))
    base = TrainConfig(data=str(small_example), batch_size=8, cache_views=1)
    config, _ = apply_preset(base, "balanced", dataset)
    short = dict(epochs=4, head_epochs=2, augment="none")
    full = list(train(TrainConfig(**{**config.to_dict(), **short, "out": str(tmp_path / "a")})))
    epochs = [e for e in full if isinstance(e, ev.Epoch)]
    assert [e.phase for e in epochs] == ["head", "head", "train", "train"]
    assert not any(isinstance(e, ev.Batch) and e.epoch <= 2 for e in full)  # solved, not stepped
    import threading

    stop = threading.Event()
    staged = TrainConfig(**{**config.to_dict(), **short, "out": str(tmp_path / "b")})
    for event in train(staged, stop=stop):
        if isinstance(event, ev.Epoch) and event.epoch == 2:
            stop.set()
    resumed = list(train(TrainConfig(out=str(tmp_path / "b"), resume=True)))
    assert resumed[0].resumed_from_epoch == 2
    assert resumed[-1].metrics == full[-1].metrics
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["preset"] == "balanced" and saved["freeze"] == "last:1"


def test_settings_given_by_hand_lie_over_the_preset_and_the_head_phase_fits():
    from studio.training.presets import PRESETS, lay_over

    balanced = TrainConfig(**PRESETS["balanced"].settings)
    config, note = lay_over(balanced, {"epochs": 2})
    assert (config.epochs, config.head_epochs) == (2, 1) and "head_epochs=1 to fit" in note
    config, note = lay_over(balanced, {"epochs": 2, "head_epochs": 5})
    assert config.head_epochs == 5  # given by hand: the config's own check speaks
    with pytest.raises(StudioError, match="head epochs must be fewer"):
        config.validate()
    assert lay_over(balanced, {}) == (balanced, "")


def test_the_check_computes_features_only_where_every_possible_preset_reads_them():
    """``studio train`` has the data check compute the backbone's features when the run will
    read them whichever preset ``auto`` chooses, not for a run that fine-tunes from the start."""
    from dataclasses import replace

    from studio.training.config import TrainConfig
    from studio.training.presets import possible_configs

    config = TrainConfig(data="pictures")
    assert [c.preset for c in possible_configs(config, "auto", {})] == ["quick", "balanced"]
    assert all(c.reads_pooled_features() for c in possible_configs(config, "auto", {}))
    # Balanced's head-only epochs do not fit in one epoch: it fine-tunes from the start.
    assert not possible_configs(config, "balanced", {"epochs": 1})[0].reads_pooled_features()
    assert not possible_configs(config, "auto", {"cache": False})[0].reads_pooled_features()
    whole = replace(config, freeze="none")
    assert not possible_configs(whole, "custom", {})[0].reads_pooled_features()
    assert not replace(config, pretrained=False).reads_pooled_features()
