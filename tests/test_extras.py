"""L2-SP, the LR finder and the example dataset generator."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from studio.data.example import CLASSES, make_example_dataset
from studio.models.backbones import create_backbone
from studio.training.lr_finder import lr_find, suggest_lr
from studio.training.train import TrainConfig, run_training


def _distance_from_pretrained(run_dir) -> float:
    trained = load_file(str(run_dir / "model.safetensors"))
    pretrained, _ = create_backbone("tf_efficientnet_lite0", 3)
    name = "blocks.6.0.conv_pwl.weight"  # a layer the "to:stage6" freeze leaves trainable
    return float((trained[name] - pretrained.state_dict()[name]).norm())


def test_l2sp_keeps_weights_near_their_pretrained_values(small_example, tmp_path):
    common = dict(
        data=str(small_example),
        epochs=2,
        augment="none",
        batch_size=8,
        freeze="to:stage6",
        lr=3e-3,
        layer_decay=1.0,
        weight_decay=0.0,
    )
    run_training(TrainConfig(out=str(tmp_path / "free"), **common))
    run_training(TrainConfig(out=str(tmp_path / "l2sp"), l2sp=50.0, **common))
    free, held = (_distance_from_pretrained(tmp_path / n) for n in ("free", "l2sp"))
    assert free > 0 and held < 0.7 * free


def test_lr_finder_gives_a_sensible_suggestion(small_example):
    result = lr_find(TrainConfig(data=str(small_example), batch_size=8), steps=40)
    assert len(result["lrs"]) == len(result["losses"]) >= 10
    assert result["lrs"] == sorted(result["lrs"])
    assert 1e-5 < result["suggestion"] < 1.0
    lrs = list(np.logspace(-5, 0, 50))
    losses = [1 / (1 + np.exp(8 * (np.log10(lr) + 2.5))) for lr in lrs]
    assert 1e-3 < suggest_lr(lrs, losses) < 1e-2


def test_example_dataset_is_reproducible_and_matches_the_shipped_copy(tmp_path, example):
    made = make_example_dataset(tmp_path / "ex", seed=0)
    for name in CLASSES:
        files = sorted(p.name for p in (made / name).glob("*.jpg"))
        assert len(files) >= 30
        assert files == sorted(p.name for p in (example / name).glob("*.jpg"))
        a = np.asarray(Image.open(made / name / files[7]), dtype=float)
        b = np.asarray(Image.open(example / name / files[7]), dtype=float)
        assert np.abs(a - b).mean() < 2.0  # same tile; JPEG encoders may differ in the last bit
    other = make_example_dataset(tmp_path / "other", seed=1)
    a = np.asarray(Image.open(made / "brick" / "brick_05.jpg"), dtype=float)
    b = np.asarray(Image.open(other / "brick" / "brick_05.jpg"), dtype=float)
    assert not np.allclose(a, b, atol=5)
    assert torch.tensor(a).shape == (128, 128, 3)


def test_hardest_pictures_put_every_mistake_first():
    """A right answer it was unsure about (loss 0.92) comes after a narrow mistake (0.80)."""
    from studio.data.dataset import Sample
    from studio.inspection.evaluate import compute_metrics

    samples = [Sample(f"{i}.jpg", (0,)) for i in range(3)]
    probs = np.array([[0.40, 0.30, 0.30], [0.45, 0.50, 0.05], [0.90, 0.05, 0.05]])
    top = compute_metrics(samples, probs, ["a", "b", "c"])["top_losses"]
    assert [t["path"] for t in top] == ["1.jpg", "0.jpg", "2.jpg"]
    assert [t["correct"] for t in top] == [False, True, True]
