"""Loading folders, split folders, zips and CSVs, and the report that names every problem."""

from __future__ import annotations

import io
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import write_image
from PIL import Image, ImageEnhance

from studio.data.dataset import load_dataset
from studio.data.safezip import ZipLimits, extract_zip
from studio.errors import DataError


def make_classes(root, counts: dict[str, int], seed: int = 0):
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(
                root / name / f"{name}{i}.png", seed=seed + c * 1000 + i, color=(50 * c, 90, 0)
            )
    return root


def test_class_folders_get_a_seeded_stratified_split(tmp_path):
    root = make_classes(tmp_path / "d", {"cat": 20, "dog": 20, "fox": 10})
    a = load_dataset(root, seed=1)
    b = load_dataset(root, seed=1)
    c = load_dataset(root, seed=2)
    assert a.classes == ["cat", "dog", "fox"]
    assert a.split_hash() == b.split_hash() != c.split_hash()
    assert a.report.counts["test"] == {"cat": 3, "dog": 3, "fox": 2}
    assert a.report.counts["val"]["fox"] >= 1
    assert sum(len(v) for v in a.splits.values()) == 50
    assert a.report.layout == "class folders"


def test_split_folders_are_respected_and_val_carved_from_train(tmp_path):
    make_classes(tmp_path / "d" / "train", {"a": 10, "b": 10})
    make_classes(tmp_path / "d" / "test", {"a": 3, "b": 3}, seed=500)
    ds = load_dataset(tmp_path / "d")
    assert ds.report.layout == "split folders"
    assert len(ds.test) == 6 and all("/test/" in s.path for s in ds.test)
    assert len(ds.val) >= 2 and all("/train/" in s.path for s in ds.val)


def test_bad_files_are_each_reported_and_never_crash(tmp_path):
    root = make_classes(tmp_path / "d", {"good": 6, "fine": 6})
    bad = root / "good"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image at all\n" * 10)
    (bad / "notes.txt").write_text("hello")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8)).save(
        buffer, "PNG"
    )
    (bad / "cut.png").write_bytes(buffer.getvalue()[:2000])
    Image.new("L", (9000, 9000)).save(bad / "bomb.png")
    (root / "loose.jpg").write_bytes(b"x")
    (root / "empty_class").mkdir()
    (bad / "link.png").symlink_to(bad / "good0.png")

    ds = load_dataset(root, max_pixels=50_000_000)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in ds.report.skipped}
    assert reasons["empty.jpg"].startswith("empty file")
    assert "not an image" in reasons["text.jpg"]
    assert "not an image file" in reasons["notes.txt"]
    assert "truncated" in reasons["cut.png"] or "damaged" in reasons["cut.png"]
    assert "too large" in reasons["bomb.png"]
    assert "not inside a class folder" in reasons["loose.jpg"]
    assert "symbolic link" in reasons["link.png"]
    assert ds.report.empty_classes == ["empty_class"]
    assert ds.classes == ["fine", "good"]
    assert sum(len(v) for v in ds.splits.values()) == 12
    assert "empty_class" in ds.report.summary()


def test_duplicates_and_train_test_leakage_are_found(tmp_path):
    make_classes(tmp_path / "d" / "train", {"a": 8, "b": 8})
    make_classes(tmp_path / "d" / "test", {"a": 2, "b": 2}, seed=500)
    # The same picture in train and test, byte for byte, and a resized copy (near duplicate).
    shutil.copy(tmp_path / "d/train/a/a0.png", tmp_path / "d/test/a/copy.png")
    Image.open(tmp_path / "d/train/b/b1.png").resize((128, 96)).save(tmp_path / "d/test/b/big.png")
    ds = load_dataset(tmp_path / "d")
    flat_exact = [p for group in ds.report.exact_duplicates for p in group]
    assert any(p.endswith("copy.png") for p in flat_exact)
    assert any(any(p.endswith("big.png") for p in g) for g in ds.report.near_duplicates)
    leaked = {pair[1].rsplit("/", 1)[-1] for pair in ds.report.leakage}
    assert {"copy.png", "big.png"} <= leaked
    assert len(ds.report.leakage) == 2
    assert any("appear in two splits" in w for w in ds.report.warnings)


def test_near_duplicates_are_copies_not_look_alikes(tmp_path, example):
    # The example's tiles are 36 different patches of one brick wall: alike (three of them are
    # 4 of 64 bits apart in a small dHash) but not copies. A copy made smaller, re-compressed or
    # brightened is one.
    data = tmp_path / "d"
    shutil.copytree(example, data)
    original = Image.open(data / "grass" / "grass_07.jpg")
    original.resize((90, 90)).save(data / "grass" / "smaller.png")
    original.save(data / "grass" / "recompressed.jpg", quality=35)
    ImageEnhance.Brightness(original).enhance(1.2).save(data / "grass" / "brighter.jpg")
    groups = load_dataset(data).report.near_duplicates
    assert len(groups) == 1, groups
    names = sorted(p.rsplit("/", 1)[-1] for p in groups[0])
    assert names == ["brighter.jpg", "grass_07.jpg", "recompressed.jpg", "smaller.png"]


def test_own_split_never_separates_duplicates(tmp_path):
    root = make_classes(tmp_path / "d", {"a": 12, "b": 12})
    for i in range(6):
        shutil.copy(root / "a" / f"a{i}.png", root / "a" / f"dup{i}.png")
    for seed in range(5):
        ds = load_dataset(root, seed=seed)
        assert ds.report.leakage == []
        assert len(ds.report.exact_duplicates) == 6


def test_fewer_than_two_classes_stops_with_one_line(tmp_path):
    make_classes(tmp_path / "d", {"only": 5})
    with pytest.raises(DataError, match="at least two classes") as info:
        load_dataset(tmp_path / "d")
    assert "\n" not in str(info.value)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no usable images"):
        load_dataset(tmp_path / "nothing")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing")


def test_zip_of_class_folders_loads(tmp_path):
    root = make_classes(tmp_path / "d", {"x": 5, "y": 5})
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in root.rglob("*.png"):
            zf.write(path, "mydata/" + str(path.relative_to(root)))
    ds = load_dataset(archive)
    assert ds.classes == ["x", "y"] and ds.report.total == 10


def _zip_with(tmp_path, name, data=b"abc", attr=None):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        if attr is not None:
            info.external_attr = attr
        zf.writestr(info, data)
    return archive


@pytest.mark.parametrize("name", ["../escape.png", "/etc/evil.png", "a/../../escape.png"])
def test_zip_path_escapes_are_refused(tmp_path, name):
    with pytest.raises(DataError, match="unsafe path"):
        extract_zip(_zip_with(tmp_path, name), tmp_path / "out")
    assert not (tmp_path / "escape.png").exists()


def test_zip_symlinks_bombs_and_empty_zips_are_refused(tmp_path):
    link = _zip_with(tmp_path, "a/link.png", b"/etc/passwd", attr=(stat.S_IFLNK | 0o777) << 16)
    with pytest.raises(DataError, match="symbolic link"):
        extract_zip(link, tmp_path / "o1")
    bomb = _zip_with(tmp_path, "a/zeros.png", b"\0" * 5_000_000)
    with pytest.raises(DataError, match="inflates|size limit"):
        extract_zip(bomb, tmp_path / "o2", ZipLimits(max_ratio=100))
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(DataError, match="empty"):
        load_dataset(empty)
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        load_dataset(tmp_path / "fake.zip")


def test_csv_with_several_tags_is_multilabel(tmp_path):
    for i in range(12):
        write_image(tmp_path / "img" / f"{i}.png", seed=i)
    rows = ["path,labels"]
    for i in range(12):
        tags = ["sky"] + (["tree"] if i % 2 else []) + (["water"] if i % 3 == 0 else [])
        rows.append(f"img/{i}.png,{';'.join(tags)}")
    rows += ["img/missing.png,sky", "img/0.png,", "../outside.png,sky"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path / "labels.csv", seed=0)
    assert ds.multilabel and ds.classes == ["sky", "tree", "water"]
    assert sum(len(v) for v in ds.splits.values()) == 12
    reasons = " | ".join(s.reason for s in ds.report.skipped)
    assert "not found" in reasons and "no label" in reasons and "outside" in reasons
    # The folder form with labels.csv inside loads the same.
    assert load_dataset(tmp_path).split_hash() == ds.split_hash()


def test_csv_without_needed_columns_says_so(tmp_path):
    (tmp_path / "bad.csv").write_text("file_name,class\na.png,x\n")
    with pytest.raises(DataError, match="'path' and 'labels'"):
        load_dataset(tmp_path / "bad.csv")


def test_multilabel_counts_pictures_once_and_bad_csvs_are_named(tmp_path):
    """24 pictures with two tags each are 24 pictures, not 48; a split the CSV misspells is
    reported, not quietly taken as train; a CSV that is not one is a one-line DataError."""
    rows = ["path,labels,split"]
    for i in range(24):
        write_image(tmp_path / "img" / f"{i}.png", seed=i)
        rows.append(f"img/{i}.png,{'sky;tree' if i % 2 else 'sky;water'},")
    write_image(tmp_path / "img" / "odd.png", seed=99)
    rows.append("img/odd.png,sky,tset")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    report = load_dataset(tmp_path / "labels.csv", seed=0).report
    assert report.total == 24 and sum(report.images.values()) == 24
    assert (
        report.images["train"] < 24
        and sum(report.counts["train"].values()) == 2 * report.images["train"]
    )
    assert f"train {report.images['train']:5d}" in report.summary()
    (odd,) = [s for s in report.skipped if s.path.endswith("odd.png")]
    assert "unknown split 'tset'" in odd.reason
    (tmp_path / "huge.csv").write_text("path,labels\nimg/0.png," + "x" * 200_000 + "\n")
    with pytest.raises(DataError, match="not a readable CSV file"):
        load_dataset(tmp_path / "huge.csv")
    nul = "path,labels\nimg/0\x00.png,sky\n" + "".join(f"img/{i}.png,t{i % 2}\n" for i in range(8))
    (tmp_path / "nul.csv").write_text(nul)
    skipped = load_dataset(tmp_path / "nul.csv").report.skipped
    assert [s.reason for s in skipped] == ["the path holds a NUL byte"]


def test_look_alikes_do_not_chain_into_one_duplicate_group(tmp_path):
    """600 small grey digits (scikit-learn's, 60 a class) are alike but not copies: no
    duplicate groups, no 'conflicting labels', a stratified split; three real copies of one
    digit are still found and kept together."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen = dict.fromkeys(range(10), 0)
    for image, label in zip(digits.images, digits.target):
        if seen[label] < 60:
            pixels = (image / 16 * 255).astype("uint8")
            (tmp_path / str(label)).mkdir(exist_ok=True)
            Image.fromarray(pixels).resize((28, 28)).save(
                tmp_path / str(label) / f"{seen[label]}.png"
            )
            seen[label] += 1
    report = load_dataset(tmp_path, seed=0).report
    assert report.near_duplicates == [] and report.conflicting_labels == []
    for split in ("train", "val", "test"):
        per_class = list(report.counts[split].values())
        assert max(per_class) - min(per_class) <= 2, (split, per_class)
    original = Image.open(tmp_path / "3" / "0.png")
    original.resize((21, 21)).save(tmp_path / "3" / "smaller.png")
    original.convert("RGB").save(tmp_path / "3" / "resaved.jpg", quality=35)
    ImageEnhance.Brightness(original).enhance(1.2).save(tmp_path / "3" / "brighter.png")
    groups = load_dataset(tmp_path, seed=0).report.near_duplicates
    assert [sorted(p.rsplit("/", 1)[-1] for p in g) for g in groups] == [
        ["0.png", "brighter.png", "resaved.jpg", "smaller.png"]
    ]


def test_a_picture_is_decoded_once_across_loads(tmp_path, small_example):
    """Reloading a dataset (the app does after every added picture) decodes only new or changed
    files; the report is the same; a broken file keeps its reason without a second decode."""
    import os

    from studio.data.facts import MEMO

    data = tmp_path / "data"
    shutil.copytree(small_example, data)
    (data / "brick" / "broken.jpg").write_bytes(b"not a picture")
    MEMO.clear()
    before = MEMO.decoded
    first = load_dataset(data)
    assert MEMO.decoded - before == first.report.total + 1  # every picture and the broken file
    second = load_dataset(data, seed=1)
    assert MEMO.decoded - before == first.report.total + 1  # nothing decoded again
    assert second.report.skipped == first.report.skipped
    assert second.report.near_duplicates == first.report.near_duplicates
    changed = sorted((data / "grass").glob("*.jpg"))[0]
    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed)
    os.utime(changed, ns=(1, 1))  # a new time as well as new bytes
    load_dataset(data)
    assert MEMO.decoded - before == first.report.total + 2  # only the changed picture


def test_an_upload_is_not_decoded_again_for_the_report(tmp_path, small_example):
    from studio.data.facts import MEMO
    from studio.workspace import Workspace

    ws = Workspace(tmp_path, "w")
    for name in ("brick", "grass"):
        ws.add_images(name, sorted((small_example / name).glob("*.jpg"))[:4])
    before = MEMO.decoded
    dataset = ws.dataset()
    assert dataset.report.total == 8 and MEMO.decoded == before


def test_many_pictures_are_checked_in_worker_processes_with_progress(
    tmp_path, small_example, monkeypatch
):
    """Past PROCESSES_FROM pictures the decode pass runs in worker processes: the same facts
    and reasons as threads, each picture decoded once, progress to the end. A zip upload goes
    through it, with progress in the app, and the report then decodes nothing again."""
    from studio.data import facts
    from studio.ui.common import Context
    from studio.ui.data_tab import upload_zip
    from studio.workspace import Workspace

    data = tmp_path / "data"
    shutil.copytree(small_example, data)
    (data / "brick" / "broken.jpg").write_bytes(b"not a picture")
    paths = sorted(str(p) for p in data.rglob("*.jpg"))
    facts.MEMO.clear()
    by_threads = facts.facts_of_many(paths)
    facts.MEMO.clear()
    monkeypatch.setattr(facts, "PROCESSES_FROM", 2)
    monkeypatch.setattr(facts, "CHUNK", 8)
    seen, before = [], facts.MEMO.decoded
    by_processes = facts.facts_of_many(paths, progress=lambda d, t: seen.append((d, t)))
    assert by_processes == by_threads and facts.MEMO.decoded - before == len(paths)
    assert sum(isinstance(f, str) for f in by_processes) == 1  # the broken file, with a reason
    done = [d for d, _ in seen]  # as each chunk of pictures comes back, to the last
    assert done == sorted(set(done)) and done[-1] == len(paths) and len(done) > 1

    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, Path(p).relative_to(data))
    ws, calls = Workspace(tmp_path / "ws"), []
    report = ws.import_zip(archive, progress=lambda d, t: calls.append((d, t)))
    assert report.added == len(paths) - 1 and calls[-1] == (len(paths), len(paths))
    assert [name for name, _ in report.skipped] == ["broken.jpg"]
    decoded = facts.MEMO.decoded
    assert ws.dataset().report.total == report.added and facts.MEMO.decoded == decoded

    ctx = Context(tmp_path / "app")
    _, app_ws = ctx.open(None)
    said = []
    upload_zip(ctx, app_ws.id, str(archive), progress=lambda f, desc="": said.append((f, desc)))
    n = len(paths)
    assert said[-1] == (1.0, f"checking pictures: {n:,} of {n:,}")
    assert app_ws.counts() == ws.counts()


def test_a_tables_pictures_are_checked_in_one_pass_and_every_refused_row_is_named(tmp_path):
    from studio.data import facts
    from studio.data.table import merge_table

    source, target = tmp_path / "zip", tmp_path / "set"
    (source / "pics").mkdir(parents=True)
    target.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(source / "pics" / "red.png")
    (source / "pics" / "broken.jpg").write_bytes(b"not a jpeg")
    (source / "notes.txt").write_text("hello")
    (tmp_path / "outside.png").write_bytes((source / "pics" / "red.png").read_bytes())
    rows = ["path,colour", "pics/red.png,red", "pics/broken.jpg,red", "notes.txt,red",
            "../outside.png,red", "pics/gone.png,red", ",red"]  # fmt: skip
    (source / "labels.csv").write_text("\n".join(rows) + "\n")
    seen = []
    added, refused = merge_table(source, target, lambda done, total: seen.append((done, total)))
    assert added == 1 and (target / "pics" / "red.png").is_file()
    assert seen and seen[-1] == (2, 2)  # the two picture files, checked in one pass
    why = dict(refused)
    assert why["pics/broken.jpg"] == "not an image, or a format that cannot be read"
    assert why["notes.txt"].startswith("not a picture file")
    assert why["../outside.png"] == "the path points outside the table's folder"
    assert why["pics/gone.png"] == "listed in labels.csv but not in the zip"
    assert why["(empty path)"] == "the row has no path"
    decoded = facts.MEMO.decoded
    facts.facts_of(target / "pics" / "red.png")  # the copy's facts are the check's
    assert facts.MEMO.decoded == decoded
