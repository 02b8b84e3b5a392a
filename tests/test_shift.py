"""Domain shift: the statistics against hand computations and known answers, then the whole
measure on the example against a shifted copy of it, and the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error

from studio.cli import main
from studio.domain.example import shifted_copy
from studio.domain.pictures import load_pictures
from studio.domain.shift import (
    Embedder,
    measure_shift,
    median_bandwidth,
    mmd2_unbiased,
    permutation_test,
    proxy_a_distance,
    verdict,
)


def test_mmd_matches_a_hand_computation():
    x, y, s = np.array([[0.0], [1.0]]), np.array([[2.0], [4.0]]), 1.0
    k = lambda a, b: math.exp(-((a - b) ** 2) / (2 * s * s))  # noqa: E731
    xx = (k(0, 1) + k(1, 0)) / 2  # pairs i != j, over m(m-1)
    yy = (k(2, 4) + k(4, 2)) / 2
    xy = (k(0, 2) + k(0, 4) + k(1, 2) + k(1, 4)) / 4
    assert mmd2_unbiased(x, y, sigma=s) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    # the median heuristic: distances 1, 2, 4, 1, 3, 2 -> median 2
    assert median_bandwidth(np.array([[0.0], [1.0], [2.0], [4.0]])) == 2.0


def test_the_permutation_test_rarely_cries_wolf_and_sees_a_real_shift():
    rng = np.random.default_rng(0)
    false_alarms = 0
    for trial in range(40):
        x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
        _, p, _ = permutation_test(x, y, permutations=200, seed=trial)
        false_alarms += p < 0.05
    assert false_alarms <= 6  # expected 2 of 40 at the 5% level
    _, p, _ = permutation_test(rng.normal(size=(30, 5)), rng.normal(0.8, 1, size=(30, 5)), 200)
    assert p < 0.01
    assert proxy_a_distance(rng.normal(size=(40, 5)), rng.normal(size=(40, 5)))[1] < 0.6
    assert proxy_a_distance(rng.normal(size=(40, 5)), rng.normal(3, 1, size=(40, 5)))[1] > 1.8


def test_the_verdict_agrees_with_its_numbers():
    assert verdict(0.4, {}, 100, 100)[0] == "green"
    assert verdict(0.001, {}, 100, 100)[0] == "amber"  # differs; cost unknown without labels
    red = verdict(0.001, {"source": 0.95, "target": 0.60}, 100, 100)
    assert red[0] == "red" and "95%" in red[1] and "60%" in red[1]
    assert verdict(0.001, {"source": 0.95, "target": 0.94}, 100, 100)[0] == "amber"  # copes
    assert "needs 30 in each" in verdict(0.4, {}, 12, 100)[1]


@pytest.fixture(scope="module")
def shifted(example, tmp_path_factory):
    return shifted_copy(example, tmp_path_factory.mktemp("shifted") / "phone", seed=0)


def test_a_shifted_copy_of_the_example_is_told_apart_and_costs_accuracy(
    example, shifted, trained_run
):
    result = measure_shift(load_pictures(example), load_pictures(shifted),
                           Embedder.from_run(trained_run), run_dir=trained_run,
                           permutations=200)  # fmt: skip
    assert result["p_value"] < 0.01 and result["mmd"] > 0 and result["a_distance"] > 1.0
    assert result["n_source"] == result["n_target"] == 108 and result["trusted"]
    assert set(result["per_class"]) == {"brick", "grass", "gravel"}
    assert result["accuracy"]["target"] is not None and result["verdict"] in ("red", "amber")
    if result["verdict"] == "red":  # the sentence says the measured cost
        assert result["accuracy"]["source"] - result["accuracy"]["target"] >= 0.05
    typical = result["typical"]["target"]["most_typical_of_other"]
    assert len(typical) == 5 and all(p["path"].startswith(str(shifted)) for p in typical)
    assert len(result["map"]["points"]) == 216 and len(result["map"]["paths"]) == 216


def test_a_picture_embedded_once_is_not_embedded_again_until_it_or_the_model_changes(
    shifted, trained_run, tmp_path, monkeypatch
):
    """Measuring a shift, then adapting (or reweighting) the run, embeds the same pictures
    with the same model: the second time costs nothing, and gives the same numbers."""
    import os

    from studio.domain import shift

    pictures = load_pictures(shifted).keep([0, 1, 2, 3], [])
    first = Embedder.from_run(trained_run).embed(pictures)
    decoded: list[str] = []
    real = shift.prepared
    monkeypatch.setattr(shift, "prepared", lambda path, tf: decoded.append(path) or real(path, tf))
    again = Embedder.from_run(trained_run).embed(pictures)
    assert decoded == []
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])
    assert again[2].paths == pictures.paths
    changed = pictures.paths[1]
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # edited in place
    Embedder.from_run(trained_run).embed(pictures)
    assert decoded == [changed]
    other = tmp_path / "retrained"  # another run folder: another network
    shutil.copytree(trained_run, other)
    Embedder.from_run(other).embed(pictures)
    assert decoded == [changed, *pictures.paths]


def test_two_halves_of_the_same_pictures_show_no_shift(example, tmp_path):
    halves = [tmp_path / "a", tmp_path / "b"]
    for folder in sorted(p for p in example.iterdir() if p.is_dir()):
        for i, picture in enumerate(sorted(folder.glob("*.jpg"))):
            (halves[i % 2] / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(picture, halves[i % 2] / folder.name / picture.name)
    result = measure_shift(load_pictures(halves[0]), load_pictures(halves[1]),
                           Embedder.from_backbone("tf_efficientnet_lite0"),
                           permutations=200)  # fmt: skip
    assert result["p_value"] > 0.05 and result["verdict"] == "green", result["sentence"]


def test_the_shift_command_prints_json_and_refuses_bad_folders(
    small_example, shifted, trained_run, tmp_path, capsys
):
    example = small_example
    assert main(["shift", str(example), str(shifted), "--permutations", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("mmd", "p_value", "a_distance", "n_source", "n_target", "per_class"):
        assert key in out
    assert out["features_from"] == "tf_efficientnet_lite0" and out["p_value"] < 0.05
    empty, notes, junk, strange = (tmp_path / n for n in ("empty", "notes", "junk", "strange"))
    empty.mkdir()
    notes.mkdir()
    (notes / "readme.txt").write_text("not a picture")
    junk.mkdir()
    (junk / "photo.jpg").write_bytes(b"not really a jpeg")
    (strange / "cats").mkdir(parents=True)
    for i in range(2):
        shutil.copy(next(shifted.rglob("*.jpg")), strange / "cats" / f"{i}.jpg")
    cases = [
        ([empty], "TARGET: no pictures in"),
        ([notes], "no pictures in"),
        ([junk], "could be read"),
        ([strange, "--run", str(trained_run)], "classes the run does not know: cats"),
        ([tmp_path / "missing"], "is not a folder"),
    ]
    for target, message in cases:
        argv = ["shift", example, *target, "--permutations", "10"]
        assert_one_line_error(capsys, argv, message)
    # A new picture that is a training picture is named, in the text output too.
    original = sorted(example.rglob("*.jpg"))[0]
    shutil.copy(original, strange / "cats" / "copied.jpg")
    assert main(["shift", str(example), str(strange), "--permutations", "10"]) == 0
    out = capsys.readouterr().out
    assert "warning: 1 new picture(s) are copies of training pictures" in out
    assert f"copied.jpg = {original}" in out


def test_the_domain_tab_takes_new_pictures_and_shows_the_verdict(
    shifted, trained_run, small_example, tmp_path
):
    import zipfile

    import gradio as gr

    from studio.ui.common import Context
    from studio.ui.domain_tab import add_new, measure, new_pictures_status, show_point

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    shutil.copytree(trained_run, ws.runs_dir / trained_run.name)
    assert new_pictures_status(ctx, ws.id) == "No new pictures yet."
    archive = tmp_path / "phone.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for picture in sorted(shifted.rglob("*.jpg"))[::3]:  # a third of them, labelled
            z.write(picture, picture.relative_to(shifted))
        z.writestr("notes.txt", "not a picture")
    loose = next(small_example.rglob("*.jpg"))
    said = add_new(ctx, ws.id, [str(archive), str(loose)])
    assert "37 new pictures" in said and "labelled brick, grass, gravel" in said
    assert "Skipped 1: notes.txt" in said
    light, stats, classes, figure, unlike, typical, paths = measure(
        ctx, ws.id, trained_run.name, "tsne"
    )
    assert 'data-verdict="' in light and "p = " in light
    assert stats[0][1] == "36 training, 37 new"
    assert classes == []  # one new picture is unlabelled: no per-class test
    # Circles for the training pictures, diamonds for the new; one colour per class.
    new = [t for t in figure.data if t.marker.symbol == "diamond"]
    assert sum(len(t.x) for t in new) == 37 and len(figure.data) == 3 + 4
    assert {t.name for t in new} == {f"new · {c}" for c in ("brick", "grass", "gravel", "no label")}
    # A click sends a point's index; the picture comes from the server's list, not the browser.
    point = new[0].customdata[0]
    shown = show_point(paths, f"{point[2]}:1700000000")
    assert Path(shown["value"]).name == point[0] and Path(shown["value"]).is_file()
    assert show_point(paths, "99999:1") == gr.update() and show_point(paths, "x") == gr.update()
    # The loose picture was one of the run's own training pictures: said so.
    assert stats[-1][:2] == ["copies of training pictures", "1"]
    assert "t-SNE" in figure.layout.title.text
    assert len(unlike) == 5 and all(Path(path).is_file() for path, _ in unlike + typical)
    from studio.errors import StudioError
    from studio.ui.domain_tab import remove_new

    with pytest.raises(StudioError, match="nothing is deleted without asking"):
        remove_new(ctx, ws.id, False)
    assert ws.new_pictures()[0] == 37  # still there
    said = remove_new(ctx, ws.id, True)
    assert said.startswith("Removed 37 new pictures")
    assert ws.new_pictures() == (0, [])
