"""Every image mode becomes upright 8-bit RGB; every broken file is refused with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from studio.data.images import ImageProblem, open_rgb


def test_grayscale_palette_rgba_cmyk_become_rgb(tmp_path):
    base = Image.new("RGB", (40, 30), (10, 120, 250))
    cases = {
        "gray.png": base.convert("L"),
        "palette.gif": base.convert("P"),
        "cmyk.jpg": base.convert("CMYK"),
        "bw.bmp": base.convert("1"),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        out = open_rgb(tmp_path / name)
        assert out.mode == "RGB" and out.size == (40, 30), name
    assert open_rgb(tmp_path / "cmyk.jpg").getpixel((5, 5))[2] > 200  # still blue


def test_transparent_pixels_become_white(tmp_path):
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert open_rgb(tmp_path / "clear.png").getpixel((3, 3)) == (255, 255, 255)
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "clear.gif", transparency=0)
    assert open_rgb(tmp_path / "clear.gif").getpixel((3, 3)) == (255, 255, 255)


def test_16_bit_uses_its_full_range(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 8).reshape(8, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = np.asarray(open_rgb(tmp_path / "deep.png"))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert len(np.unique(out[..., 0])) > 200  # a real ramp, not clipped to white


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert open_rgb(tmp_path / "phone.jpg").size == (20, 60)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty"),
        ("notes.jpg", b"this is a text file, not a picture\n" * 20, "not an image"),
    ],
)
def test_unusable_files_raise_with_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageProblem, match=reason):
        open_rgb(tmp_path / name)


def test_truncated_file_is_refused(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(
        buffer, "JPEG"
    )
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageProblem, match="truncated|damaged|decode"):
        open_rgb(tmp_path / "cut.jpg")


def test_oversized_image_is_refused_before_decoding(tmp_path):
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")
    with pytest.raises(ImageProblem, match="too large"):
        open_rgb(tmp_path / "big.png", max_pixels=1_000_000)


def test_a_long_thin_strip_is_refused_before_it_can_exhaust_memory(tmp_path, trained_run):
    """A 238-byte 1x39000 PNG passes the pixel count, but preparing it would need ~10 GB."""
    from studio.data.dataset import load_dataset
    from studio.deployment.predict import Predictor

    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 39000), "white").save(strip)
    assert strip.stat().st_size < 1000
    with pytest.raises(ImageProblem, match="too long and thin"):
        open_rgb(strip)
    (prediction,) = Predictor(trained_run).predict([strip])
    assert "too long and thin" in prediction.error
    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), (i * 80, 0, 0)).save(data / name / f"{i}.png")
    (data / "a" / "strip.png").write_bytes(strip.read_bytes())
    report = load_dataset(data).report
    assert any(s.path.endswith("strip.png") and "long and thin" in s.reason for s in report.skipped)
    Image.new("RGB", (40, 2000), "white").save(tmp_path / "receipt.png")  # 1:50 still passes
    assert open_rgb(tmp_path / "receipt.png").size == (40, 2000)


def test_a_large_jpeg_is_prepared_from_a_smaller_decode_exactly_as_the_shown_code_does(
    tmp_path, trained_run, monkeypatch
):
    """A phone photo is decoded at a fraction of its size, never below the model's resize, by
    the app and by the code shown beside the download alike (their pixels must agree)."""
    import json
    import shutil

    import torch

    from studio.data.loaders import build_transform, prepared, source_side
    from studio.deployment.samples import PREPARE
    from studio.models.kinds import load_run

    loaded = load_run(trained_run)
    tf = loaded.transform()
    resize = json.loads((trained_run / "preprocess.json").read_text())["resize"]
    assert source_side(tf) == resize == 256
    training = build_transform(loaded.data_config(), "light", training=True)
    assert source_side(training) is None  # random crops zoom in: the full picture

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    photo = Image.fromarray(coarse).resize((2048, 1536), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, as phones do
    photo.save(tmp_path / "photo.jpg", quality=90, exif=exif)
    assert open_rgb(tmp_path / "photo.jpg", at_least=resize).size == (384, 512)  # 1/4, upright

    app = prepared(tmp_path / "photo.jpg", tf)
    assert not torch.allclose(app, tf(open_rgb(tmp_path / "photo.jpg")), atol=1e-3)
    for name in ("preprocess.json", "labels.json"):
        shutil.copy(trained_run / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    shown: dict = {}
    exec(PREPARE, shown)  # noqa: S102 - the product's own sample code
    assert shown["x"].shape == (1, *app.shape)
    assert np.abs(shown["x"][0] - app.numpy()).max() < 1e-5
