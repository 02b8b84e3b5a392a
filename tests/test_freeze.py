"""Freeze specs, BatchNorm staying frozen, and layer-wise learning rates."""

from __future__ import annotations

import pytest
import timm
import torch

from studio.errors import StudioError
from studio.models.backbones import model_groups
from studio.models.freeze import (
    apply_freeze,
    keep_frozen_norms_in_eval,
    optimizer_groups,
    parse_freeze,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=3)


def test_specs(model):
    groups = model_groups(model)
    names = [g.name for g in groups]
    assert names == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert parse_freeze("none", groups) == []
    assert parse_freeze("backbone", groups) == names[:-1]
    assert parse_freeze("2", groups) == ["stem", "stage1"]
    assert parse_freeze("to:stage3", groups) == ["stem", "stage1", "stage2", "stage3"]
    assert parse_freeze("stage2,stem", groups) == ["stem", "stage2"]
    for bad in ["6", "to:stage9", "stem,wings", ",".join(names)]:
        with pytest.raises(StudioError):
            parse_freeze(bad, groups)


def test_frozen_batchnorm_keeps_its_statistics(model):
    groups = model_groups(model)
    trainable, frozen = apply_freeze(model, groups, parse_freeze("2", groups))
    assert trainable > 0 and frozen > 0
    before_frozen = model.bn1.running_mean.clone()
    before_trained = model.layer4[0].bn1.running_mean.clone()
    model.train()
    keep_frozen_norms_in_eval(model)
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert torch.equal(model.bn1.running_mean, before_frozen)
    assert torch.equal(model.layer1[0].bn1.running_mean, model.layer1[0].bn1.running_mean)
    assert not torch.equal(model.layer4[0].bn1.running_mean, before_trained)


def test_layer_decay_and_no_decay_on_biases(model):
    groups = model_groups(model)
    apply_freeze(model, groups, [])
    param_groups = optimizer_groups(model, groups, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    lr_of = {g["group"]: g["lr"] for g in param_groups}
    assert lr_of["head"] == 1.0 and lr_of["stage4"] == 0.5 and lr_of["stem"] == 0.5**5
    for g in param_groups:
        assert all(p.ndim >= 2 for p in g["params"]) == (g["weight_decay"] > 0)
    apply_freeze(model, groups, parse_freeze("backbone", groups))
    only_head = optimizer_groups(model, groups, 1.0, 0.0)
    assert {g["group"] for g in only_head} == {"head"}


def test_the_augmentation_preview_uses_the_chosen_backbones_preprocessing(small_example):
    from studio.data.loaders import augmentation_preview
    from studio.models.backbones import preprocess_config

    pictures = [str(p) for p in sorted(small_example.rglob("*.jpg"))[:2]]
    lite0 = augmentation_preview(pictures, preprocess_config("tf_efficientnet_lite0"), "strong")
    lite2 = augmentation_preview(pictures, preprocess_config("tf_efficientnet_lite2"), "strong")
    assert lite0[0].shape == (224, 224, 3) and lite2[0].shape == (260, 260, 3)
    assert lite0[0].dtype.name == "uint8"
    again = augmentation_preview(pictures, preprocess_config("tf_efficientnet_lite0"), "strong")
    assert all((a == b).all() for a, b in zip(lite0, again))  # seeded: the same preview twice


def test_the_sliders_count_becomes_a_freeze_spec():
    from studio.models.freeze import spec_for_count

    assert [spec_for_count(n, 4) for n in (-2, 0, 2, 3, 10)] == [
        "0",
        "0",
        "2",
        "backbone",
        "backbone",
    ]
