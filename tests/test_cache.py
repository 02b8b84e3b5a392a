"""The frozen-prefix cache reproduces the full model exactly, for many architectures."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from studio.models.backbones import model_groups
from studio.models.freeze import apply_freeze, parse_freeze
from studio.training.cache import FeatureStore, capture, plan_cache, run_cached


@pytest.mark.parametrize(
    ("name", "spec", "mode"),
    [
        ("tf_efficientnet_lite0", "backbone", "cut"),
        ("tf_efficientnet_lite0", "3", "cut"),
        ("resnet18", "2", "cut"),
        ("mobilenetv3_small_100", "backbone", "cut"),
        ("convnext_atto", "backbone", "cut"),
        ("vit_tiny_patch16_224", "backbone", "head"),
    ],
)
def test_cached_path_equals_full_model(name, spec, mode):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3)
    groups = model_groups(model)
    apply_freeze(model, groups, parse_freeze(spec, groups))
    size = 224 if "vit" in name else 96
    sample = torch.randn(2, 3, size, size)
    plan, reason = plan_cache(model, sample)
    assert plan is not None, reason
    assert plan.mode == mode
    images = torch.randn(3, 3, size, size)
    features = capture(model, plan, images)
    with torch.no_grad():
        assert torch.allclose(run_cached(model, plan, features), model(images), atol=1e-4)
    # The head still learns through the cached path.
    model.train()
    out = run_cached(model, plan, features)
    out.sum().backward()
    assert model.get_classifier().weight.grad is not None


def test_vit_cannot_be_cut_mid_way_and_says_why():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3)
    groups = model_groups(model)
    apply_freeze(model, groups, parse_freeze("3", groups))
    plan, reason = plan_cache(model, torch.randn(2, 3, 224, 224))
    assert plan is None and "cutting" in reason


def test_store_spills_to_disk_past_its_bound(tmp_path):
    store = FeatureStore(10, 2, (4, 8, 8), max_memory_bytes=100, disk_dir=tmp_path)
    assert store.on_disk and store.dtype == np.float32
    features = torch.arange(5 * 4 * 64, dtype=torch.float32).reshape(5, 4, 8, 8)
    store.put(1, 5, features)
    got = store.get(np.array([1, 1]), np.array([5, 9]))
    assert torch.equal(got, features[[0, 4]])
    store.close()


def test_a_cache_past_its_memory_bound_trains_the_same_from_disk_and_says_so(
    small_example, tmp_path
):
    """The frozen features spill to disk (cache_memory_mb=0): the run is the same, the notice
    says how much disk it used and where, and the files are gone when the run ends."""
    from studio import events as ev
    from studio.training.train import TrainConfig, train

    def run(name: str, memory_mb: int):
        cfg = TrainConfig(data=str(small_example), out=str(tmp_path / name), epochs=2,
                          head_solver="sgd", augment="none", batch_size=8,
                          cache_memory_mb=memory_mb)  # fmt: skip
        return list(train(cfg))

    on_disk, in_memory = run("disk", 0), run("memory", 2048)
    said = [e.message for e in on_disk if isinstance(e, ev.Notice) and "cached" in e.message]
    assert len(said) == 1 and "MB on disk in" in said[0] and "removed when the run ends" in said[0]
    assert any("MB in memory" in e.message for e in in_memory if isinstance(e, ev.Notice))
    losses = [[e.val_loss for e in events if isinstance(e, ev.Epoch)]
              for events in (on_disk, in_memory)]  # fmt: skip
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert not (tmp_path / "disk" / ".cache").exists()
