"""The second set of pictures ("new pictures"): kept apart from the training classes, with
their own report, and copies of training pictures found across the two sets."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from studio.data.duplicates import copies_between
from studio.data.facts import facts_of
from studio.errors import StudioError
from studio.workspace import Workspace


def _copy(picture: Path, dest: Path, scale: float = 0.75, quality: int = 40) -> Path:
    """A resized, re-compressed and slightly brightened copy: what a phone or a chat app makes."""
    img = Image.open(picture).convert("RGB")
    img = img.resize((int(img.width * scale), int(img.height * scale)))
    img = img.point(lambda v: min(255, int(v * 1.1)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest, quality=quality)
    return dest


def test_copies_between_two_sets_are_found_and_look_alikes_are_not(example, tmp_path):
    old = sorted(example.rglob("*.jpg"))
    near = _copy(old[0], tmp_path / "near.jpg")
    same = tmp_path / "same.jpg"
    shutil.copy(old[5], same)
    others = [p for p in old[10:] if p not in (old[0], old[5])]
    new = [near, same, *others[:20]]
    rows = copies_between([facts_of(p) for p in new], [facts_of(p) for p in old[:10]])
    # One row per new picture that is a copy, pointing at its original; the 20 other example
    # pictures (same kinds of surface, other photos) are not copies.
    assert rows == [(0, 0, "near copy"), (1, 5, "identical")]


def test_new_pictures_come_in_labelled_or_not_and_get_their_report(example, tmp_path):
    ws = Workspace(tmp_path)
    ws.load_example()
    bricks = sorted((example / "brick").glob("*.jpg"))
    near = _copy(bricks[0], tmp_path / "upload" / "phone-brick.jpg")
    report = ws.add_new_pictures([near], "brick")
    assert report.added == 1 and report.classes == ["brick"]
    (tmp_path / "notes.txt").write_text("not a picture")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(bricks[1], "moss/one.jpg")  # a label the training pictures do not have
        z.write(bricks[2], "loose.jpg")  # at the top: takes no label
        z.writestr("gravel/broken.jpg", b"not a jpeg")
    report = ws.add_new_pictures([archive, tmp_path / "notes.txt"])
    assert report.added == 2 and report.classes == ["moss"]
    assert sorted(name for name, _ in report.skipped) == ["broken.jpg", "notes.txt"]
    frame = Image.open(sorted((example / "grass").glob("*.jpg"))[0])
    ws.add_new_pil(frame)  # a webcam frame, unlabelled: a JPEG of a training picture
    with pytest.raises(StudioError, match="cannot be a class name"):
        ws.add_new_pil(frame, "../escape")
    assert ws.new_pictures() == (4, ["brick", "moss"])
    assert ws.counts() == {"brick": 36, "grass": 36, "gravel": 36}  # training set untouched

    described = ws.new_pictures_report()
    assert (described.count, described.unlabelled) == (4, 2)
    assert described.per_label == {"brick": 1, "moss": 1}
    assert described.unknown_labels == ["moss"]
    kinds = {Path(new).name: (Path(old).name, kind) for new, old, kind in described.copies}
    assert kinds["phone-brick.jpg"] == (bricks[0].name, "near copy")
    assert kinds["one.jpg"] == (bricks[1].name, "identical")
    assert kinds["loose.jpg"] == (bricks[2].name, "identical")
    assert len(kinds) == 4  # the webcam frame too: a re-saved training picture
    assert sorted(Path(p).name for p, _ in described.skipped) == ["broken.jpg", "notes.txt"]
    lines = described.lines()
    assert lines[0] == "4 new pictures: 1 brick, 1 moss, 2 unlabelled"
    assert any(line.startswith("4 of them are copies of training pictures") for line in lines)
    assert any("labels the training pictures do not have: moss" in line for line in lines)

    assert ws.remove_new_pictures() == 4
    empty = ws.new_pictures_report()
    assert (empty.count, empty.skipped, empty.copies) == (0, [], [])  # refusals go with them


def test_the_data_tab_shows_the_new_pictures_report(example, tmp_path):
    from studio.ui.common import Context
    from studio.ui.new_pictures import add_new, add_snapshot, remove_new, views

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    ws.load_example()
    labels, text, gallery, _, _, copies, skipped = views(ctx, ws.id)
    assert text == "No new pictures yet." and gallery == copies == skipped == []
    assert labels["choices"] == [("no label", ""), ("brick", "brick"), ("grass", "grass"),
                                 ("gravel", "gravel")]  # fmt: skip
    picture = sorted((example / "gravel").glob("*.jpg"))[3]
    said = add_new(ctx, ws.id, [str(picture)], "gravel")
    assert said.startswith("**1 new pictures** (labelled gravel). Added 1.")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "PNG")
    said = add_snapshot(ctx, ws.id, "", Image.open(buffer))
    assert said.startswith("Added a photo to the new pictures. **2 new pictures**")
    with pytest.raises(StudioError, match="take a photo first"):
        add_snapshot(ctx, ws.id, "", None)
    _, text, gallery, number, where, copies, skipped = views(ctx, ws.id)
    assert number == 1 and where == ""  # two pictures: one page
    assert "2 new pictures: 1 gravel, 1 unlabelled" in text
    assert "1 of them are copies of training pictures" in text
    assert copies == [[f"gravel/{picture.name}", f"gravel/{picture.name}", "identical"]]
    captions = sorted(caption for _, caption in gallery)
    assert captions[0] == f"gravel/{picture.name}" and captions[1].startswith("webcam-")
    assert skipped == []
    assert remove_new(ctx, ws.id, True).startswith("Removed 2 new pictures")


def test_the_data_command_reports_new_pictures_against_training_ones(example, tmp_path, capsys):
    import json

    from studio.cli import main

    new = tmp_path / "new"
    (new / "grass").mkdir(parents=True)
    shutil.copy(sorted((example / "grass").glob("*.jpg"))[1], new / "grass" / "phone.jpg")
    _copy(sorted((example / "brick").glob("*.jpg"))[0], new / "loose.jpg")
    (new / "notes.txt").write_text("not a picture")
    assert main(["data", str(new), "--against", str(example)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 new pictures: 1 grass, 1 unlabelled")
    assert "phone.jpg = " in out and "(identical)" in out and "(near copy)" in out
    assert "skipped: " in out and "notes.txt" in out
    assert main(["data", str(new), "--against", str(example), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 2 and len(report["copies"]) == 2 and report["unknown_labels"] == []
