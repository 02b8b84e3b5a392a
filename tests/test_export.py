"""Exports check themselves against PyTorch; runs load back without unpickling."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from studio.deployment.export import (
    FORMATS,
    check_images,
    checked_exports,
    export_formats,
    export_run,
    load_run,
    refresh_model_card,
)
from studio.deployment.package import build_package, check_zip
from studio.deployment.predict import Predictor
from studio.deployment.samples import SAMPLES
from studio.errors import RunError, StudioError


@pytest.fixture(scope="module")
def exported(trained_run) -> dict:
    """Every format of the shared run, made in one go as the download makes them."""
    return {r.format: r for r in export_formats(trained_run, list(FORMATS))}


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_export_agrees_with_pytorch(trained_run, exported, fmt):
    result = exported[fmt]
    assert result.images >= 6  # real validation/test images were used, not noise
    assert result.agreement == 1.0
    assert result.max_abs_diff < 1e-3
    records = json.loads((trained_run / "exports.json").read_text())
    assert any(r["format"] == fmt and r["agreement"] == 1.0 for r in records)
    card = (trained_run / "MODEL_CARD.md").read_text()
    assert f"| {fmt} |" in card


def test_one_format_alone_is_exported_and_checked(trained_run, tmp_path):
    """export_run (the CLI's --format) outside the run folder: checked, not recorded there."""
    result = export_run(trained_run, "torchscript", out=tmp_path / "alone.pt")
    assert result.agreement == 1.0 and result.max_abs_diff < 1e-3
    assert (tmp_path / "alone.pt").is_file()
    records = json.loads((trained_run / "exports.json").read_text())
    assert not any("alone" in r["path"] for r in records)


def test_model_card_and_files_describe_the_run(trained_run):
    card = (trained_run / "MODEL_CARD.md").read_text()
    for needle in ["tf_efficientnet_lite0", "backbone", "Accuracy", "brick", "Limits", "seed 0"]:
        assert needle in card, needle
    pre = json.loads((trained_run / "preprocess.json").read_text())
    assert pre["crop"] == 224 and pre["mean"] == [0.5, 0.5, 0.5]
    labels = json.loads((trained_run / "labels.json").read_text())
    assert labels["labels"] == ["brick", "grass", "gravel"]


def test_load_run_and_predict(trained_run, example):
    loaded = load_run(trained_run)
    assert loaded.labels == ["brick", "grass", "gravel"]
    predictions = Predictor(loaded).predict(sorted((example / "gravel").glob("*.jpg"))[-3:])
    assert [p.top[0][0] for p in predictions].count("gravel") >= 2
    with pytest.raises(StudioError):
        Predictor(loaded).predict([], top_k=0)


def test_broken_runs_are_refused(tmp_path, trained_run):
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ["config.json", "labels.json"]:
        (broken / name).write_text((trained_run / name).read_text())
    (broken / "model.safetensors").write_bytes(b"garbage")
    (broken / "preprocess.json").write_text((trained_run / "preprocess.json").read_text())
    with pytest.raises(RunError, match="model.safetensors is not a weights file"):
        load_run(broken)
    with pytest.raises(StudioError, match="unknown export format"):
        export_run(trained_run, "tflite")


def test_the_zip_works_as_received(trained_run, tmp_path):
    """What the person downloads, unpacked into an empty folder, runs with the code shown."""
    package = build_package(trained_run)
    assert package.all_passed, package.summary()
    assert {c.format for c in package.checks} == {"onnx", "pt2", "torchscript", "safetensors"}
    with zipfile.ZipFile(package.zip_path) as zf:
        names = {n.split("/", 1)[1] for n in zf.namelist()}
        zf.extractall(tmp_path)
        texts = [zf.read(n).decode() for n in zf.namelist() if n.endswith((".json", ".md"))]
    assert "model.onnx.data" not in names  # the weights live inside model.onnx
    # No absolute paths: where the run lives on this computer is nobody else's business.
    assert not any(str(trained_run.parent) in t for t in texts)
    # Nor the run's pictures: a torch.export program keeps the inputs it was traced on, and
    # those are zeros (the pictures once travelled in model.pt2, 19 MB of them).
    import torch

    (traced,), _ = torch.export.load(str(tmp_path / trained_run.name / "model.pt2")).example_inputs
    assert traced.shape[0] == 2 and not traced.any()
    # Independently of the check: the ONNX sample as shown, in the unpacked folder.
    folder = tmp_path / trained_run.name
    shutil.copy(check_images(trained_run, 1)[0], folder / "photo.jpg")
    printed = subprocess.run(
        [sys.executable, "-c", SAMPLES["onnx"]], cwd=folder, capture_output=True, text=True
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() in ["brick", "grass", "gravel"]


def test_the_zip_check_catches_a_file_that_cannot_run(trained_run, tmp_path):
    """A zip whose model.onnx keeps its weights in a file the zip lacks fails its check."""
    import onnx

    if "onnx" not in checked_exports(trained_run):  # another test may have made it already
        export_run(trained_run, "onnx")
    graph = onnx.load(str(trained_run / "model.onnx"))
    folder = tmp_path / trained_run.name
    folder.mkdir()
    onnx.save_model(graph, str(folder / "model.onnx"), save_as_external_data=True)
    for name in ["labels.json", "preprocess.json", "config.json"]:
        shutil.copy(trained_run / name, folder / name)
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        for name in ["model.onnx", "labels.json", "preprocess.json", "config.json"]:
            zf.write(folder / name, f"{trained_run.name}/{name}")
    (check,) = check_zip(broken, load_run(trained_run))
    assert check.format == "onnx" and not check.passed
    assert "NOT checked" in check.sentence()


def test_an_interrupted_export_keeps_the_checked_file(trained_run, monkeypatch):
    """A crash while re-exporting leaves the earlier, checked file whole and still checked."""
    import studio.deployment.export as export

    if "pt2" not in checked_exports(trained_run):
        export_run(trained_run, "pt2")
    before = (trained_run / "model.pt2").read_bytes()

    def dies_halfway(reference, fmt, target):
        target.write_bytes(b"half a file")
        raise KeyboardInterrupt  # as good as kill -9 for what is on disk

    monkeypatch.setattr(export, "_write_graph", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        export_run(trained_run, "pt2")
    assert (trained_run / "model.pt2").read_bytes() == before
    assert not list(trained_run.glob(".export-*"))
    assert "pt2" in checked_exports(trained_run)


def test_a_changed_export_is_no_longer_called_checked(trained_run):
    if "torchscript" not in checked_exports(trained_run):
        export_run(trained_run, "torchscript")
    path = trained_run / "model.torchscript.pt"
    whole = path.read_bytes()
    path.write_bytes(whole[:100])  # truncated behind the app's back
    assert "torchscript" not in checked_exports(trained_run)
    refresh_model_card(trained_run)
    assert "| torchscript |" not in (trained_run / "MODEL_CARD.md").read_text()
    path.write_bytes(whole)  # the very bytes that were checked: checked again
    assert "torchscript" in checked_exports(trained_run)
    assert "| torchscript |" in refresh_model_card(trained_run).read_text()


def test_many_pictures_are_predicted_in_bounded_batches(trained_run, example):
    """Memory stays flat: never more than one batch of pictures is decoded at a time."""
    loaded = load_run(trained_run)
    sizes, seen = [], []
    hook = loaded.model.register_forward_hook(lambda m, args, out: sizes.append(len(args[0])))
    pictures = sorted(example.rglob("*.jpg"))[:45] + [trained_run / "labels.json"]
    predictor = Predictor(loaded)
    many = predictor.predict(pictures, top_k=1, batch_size=16, progress=lambda d, t: seen.append(d))
    hook.remove()
    assert max(sizes) <= 16 and sum(sizes) == 45
    assert seen == [16, 32, 46]
    assert many[-1].error and not many[0].error
    alone = [predictor.predict([p], top_k=1)[0].top[0] for p in pictures[:3]]
    assert [m.top[0][0] for m in many[:3]] == [label for label, _ in alone]
    assert [m.top[0][1] for m in many[:3]] == pytest.approx([p for _, p in alone], abs=1e-5)
