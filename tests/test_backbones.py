"""The catalog, where weights come from, and the layer groups used for freezing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import skimage.data
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import ImageNetInfo

from studio.data.loaders import build_transform
from studio.errors import BackboneError
from studio.models.backbones import (
    CATALOG,
    create_backbone,
    data_config,
    get_spec,
    model_groups,
    weights_info,
)


def test_catalog_has_many_families_and_reads_numbers_from_timm():
    assert len(CATALOG) >= 8
    assert len({s.family for s in CATALOG.values()}) >= 5
    lite2 = CATALOG["tf_efficientnet_lite2"]
    assert lite2.input_size == 260 and lite2.mean == (0.5, 0.5, 0.5)
    assert 6e6 < lite2.params < 6.2e6


def test_catalog_lists_without_torch_or_timm_once_its_facts_are_on_disk(tmp_path):
    # The app's first page shows the catalog and the layer groups: on a 2-core laptop importing
    # torch and timm takes seconds, so only the very first start may pay for it.
    code = (
        "import sys; from studio.models.backbones import catalog, catalog_needs_timm\n"
        "from studio.models.backbones import CATALOG\n"
        "before = catalog_needs_timm(); rows = catalog()\n"
        "groups = [g for spec in CATALOG.values() for g in spec.group_sizes]\n"
        "print(before, len(rows), rows[2]['input_size'], 'torch' in sys.modules, 'timm' in sys.modules)"
    )
    env = {**os.environ, "STUDIO_CACHE": str(tmp_path)}
    first, second = (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        for _ in range(2)
    )
    n = str(len(CATALOG))
    assert first.stdout.split() == ["True", n, "260", "True", "True"], first.stderr
    assert second.stdout.split() == ["False", n, "260", "False", "False"], second.stderr


def test_offline_availability_is_reported_honestly():
    assert weights_info("tf_efficientnet_lite0").source == "bundled"
    info = weights_info("resnet18")
    assert info.source == "none" and not info.available
    with pytest.raises(BackboneError, match="no pretrained weights available"):
        create_backbone("resnet18", 3)
    model, info = create_backbone("resnet18", 3, pretrained=False)
    assert info.source == "none" and "random" in info.note


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(BackboneError, match="unknown backbone"):
        get_spec("efficientnet_lite9000")


@pytest.mark.parametrize(
    "name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
)
def test_bundled_weights_are_real_imagenet_weights(name):
    model, info = create_backbone(name)
    assert info.source == "bundled"
    model.eval()
    transform = build_transform(data_config(model))
    names = ImageNetInfo()
    with torch.no_grad():
        cat = model(transform(Image.fromarray(skimage.data.chelsea()))[None]).softmax(-1)[0]
        coffee = model(transform(Image.fromarray(skimage.data.coffee()))[None]).softmax(-1)[0]
    cat_classes = {"tabby, tabby cat", "tiger cat", "Egyptian cat", "Persian cat"}
    top_cat = {names.index_to_description(i) for i in cat.topk(3).indices.tolist()}
    assert top_cat <= cat_classes | {"lynx, catamount"}
    assert (
        sum(
            float(cat[names.label_names().index(c)])
            for c in ["n02123045", "n02123159", "n02124075"]
        )
        > 0.5
    )  # tabby, tiger cat, Egyptian cat
    top_coffee = names.index_to_description(int(coffee.argmax()))
    assert top_coffee in {"espresso", "cup", "coffee mug"}


def test_local_weights_file_is_used_first(tmp_path):
    reference, _ = create_backbone("tf_efficientnet_lite0")
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    save_file(state, str(tmp_path / "mine.safetensors"))
    model, info = create_backbone(
        "tf_efficientnet_lite0", 5, weights_file=tmp_path / "mine.safetensors"
    )
    assert info.source == "file"
    assert torch.equal(model.conv_stem.weight, state["conv_stem.weight"])
    assert model.get_classifier().out_features == 5
    torch.save({"state_dict": {"nonsense": torch.zeros(3)}}, tmp_path / "bad.pth")
    with pytest.raises(BackboneError, match="does not fit"):
        create_backbone("tf_efficientnet_lite0", weights_file=tmp_path / "bad.pth")


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_groups_run_from_stem_to_head_and_cover_every_parameter(name):
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=4)
    groups = model_groups(model)
    assert groups[0].name == "stem" and groups[-1].name == "head"
    assert [g.name for g in groups[1:-1]] == [f"stage{i}" for i in range(1, len(groups) - 1)]
    names = [p for g in groups for p in g.params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert groups[-1].num_params == sum(p.numel() for p in model.get_classifier().parameters())
    # What the Model tab shows (kept on disk, two-class head) is the same grouping.
    shown = CATALOG[name].group_sizes
    assert [g for g, _ in shown] == [g.name for g in groups]
    assert [n for _, n in shown[:-1]] == [g.num_params for g in groups[:-1]]
    # ... and sized for the real number of classes once it is known (4 here, not 2).
    assert CATALOG[name].group_sizes_for(4) == [(g.name, g.num_params) for g in groups]


def test_speed_is_measured_and_remembered_for_the_catalog():
    from studio.models.backbones import catalog, known_speeds, measure_speed

    ms = measure_speed("mobilenetv3_small_100", batch=2, repeats=1)
    assert ms > 0 and known_speeds()["mobilenetv3_small_100"] == ms
    rows = {r["name"]: r for r in catalog()}
    assert rows["mobilenetv3_small_100"]["ms_per_image"] == ms
    assert rows["resnet50"]["ms_per_image"] is None  # not measured yet: said, not invented
