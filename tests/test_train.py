"""Training: events, caching, freezing, reproducibility, stop, resume and multi-label."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import write_image

from studio import events as ev
from studio.errors import StudioError
from studio.training.train import TrainConfig, run_training, train


def _config(data, out, **kw):
    """Small runs of the epoch machinery (the exact head fit has its own tests below)."""
    base = dict(
        data=str(data), out=str(out), epochs=3, augment="none", batch_size=8, head_solver="sgd"
    )
    return TrainConfig(**{**base, **kw})


def test_events_arrive_in_order_and_the_run_folder_is_complete(small_example, tmp_path):
    events = list(train(_config(small_example, tmp_path / "run")))
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert kinds.index("caching") < kinds.index("batch") < kinds.index("epoch")
    assert [e.epoch for e in events if isinstance(e, ev.Epoch)] == [1, 2, 3]
    started = events[0]
    assert started.trainable_params == 1280 * 3 + 3  # a frozen backbone trains only the head
    notices = [e.message for e in events if isinstance(e, ev.Notice)]
    assert any("computed once and cached" in n for n in notices)
    run = tmp_path / "run"
    for name in [
        "config.json",
        "events.jsonl",
        "history.csv",
        "metrics.json",
        "labels.json",
        "preprocess.json",
        "model.safetensors",
        "MODEL_CARD.md",
        "split.csv",
        "data_report.json",
    ]:
        assert (run / name).is_file(), name
    assert not (run / "checkpoint.pt").exists()  # finished runs do not keep it
    logged = [json.loads(line)["kind"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert logged[0] == "started" and logged[-1] == "finished" and "batch" not in logged
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "labels", "confusion_matrix", "per_class"} <= set(metrics)
    assert metrics["split"] == "test" and metrics["accuracy"] > 0.6  # chance is 1/3


def test_cached_training_matches_recomputing_the_backbone(small_example, tmp_path):
    cached = run_training(_config(small_example, tmp_path / "a", epochs=2))
    plain = run_training(_config(small_example, tmp_path / "b", epochs=2, cache=False))
    rows_a = list(csv.DictReader((tmp_path / "a" / "history.csv").read_text().splitlines()))
    rows_b = list(csv.DictReader((tmp_path / "b" / "history.csv").read_text().splitlines()))
    for a, b in zip(rows_a, rows_b, strict=True):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3)
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-3)
    assert cached.metrics["accuracy"] == plain.metrics["accuracy"]


def test_same_seed_same_run_other_seed_other_run(small_example, tmp_path):
    kw = dict(epochs=2, augment="light", cache_views=2)
    a = run_training(_config(small_example, tmp_path / "a", seed=3, **kw))
    b = run_training(_config(small_example, tmp_path / "b", seed=3, **kw))
    c = run_training(_config(small_example, tmp_path / "c", seed=4, **kw))
    hist = [(tmp_path / n / "history.csv").read_text().splitlines() for n in "abc"]
    strip = [[",".join(line.split(",")[:-1]) for line in h] for h in hist]  # drop seconds
    assert strip[0] == strip[1] != strip[2]
    assert a.metrics == b.metrics
    assert (
        json.loads((tmp_path / "a/run_info.json").read_text())["split_hash"]
        != json.loads((tmp_path / "c/run_info.json").read_text())["split_hash"]
    )
    assert c.metrics["n"] > 0


def test_stop_ends_cleanly_and_keeps_the_best_model(small_example, tmp_path):
    stop = threading.Event()
    events = []
    for event in train(
        _config(small_example, tmp_path / "run", epochs=10, batch_size=10), stop=stop
    ):
        events.append(event)
        if isinstance(event, ev.Batch) and event.epoch == 2:
            stop.set()  # as the app's Stop button does, in the middle of epoch 2
    stopped = [e for e in events if isinstance(e, ev.Stopped)]
    assert stopped and stopped[0].reason == "stopped by user"
    assert [e.epoch for e in events if isinstance(e, ev.Epoch)] == [1]
    assert events[-1].kind == "finished" and events[-1].best_epoch == 1
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # kept so the run can be resumed


def test_stop_while_caching_leaves_no_half_model(small_example, tmp_path):
    stop = threading.Event()
    events = []
    for event in train(_config(small_example, tmp_path / "run", batch_size=4), stop=stop):
        events.append(event)
        if isinstance(event, ev.Caching) and event.done > 0:
            stop.set()
    assert events[-1].kind == "stopped"
    assert not any(isinstance(e, ev.Epoch) for e in events)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_resume_after_kill_gives_the_uninterrupted_result(small_example, tmp_path):
    full = run_training(_config(small_example, tmp_path / "full", epochs=4, cache=False))
    run = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "studio",
        "train",
        str(small_example),
        "--out",
        str(run),
        "--epochs",
        "4",
        "--augment",
        "none",
        "--batch-size",
        "8",
        "--no-cache",
        "--preset",
        "custom",
        "--head-solver",
        "sgd",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        history = run / "history.csv"
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # 2 epochs done
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"
    assert (run / "checkpoint.pt").exists() and not (run / "model.safetensors").exists()
    with pytest.raises(StudioError, match="--resume"):
        run_training(_config(small_example, run, epochs=4, cache=False))
    stale = run / ".cache" / "killed.features"  # what a killed run's spilled features leave
    stale.parent.mkdir()
    stale.write_bytes(b"\0" * 1024)
    resumed_events = []
    for event in train(TrainConfig(out=str(run), resume=True)):
        resumed_events.append(event)
        assert not isinstance(event, ev.Epoch) or not stale.exists()  # freed at the start
    assert resumed_events[0].resumed_from_epoch >= 1  # the last checkpoint written before the kill
    epochs = [e.epoch for e in resumed_events if isinstance(e, ev.Epoch)]
    assert epochs and epochs[-1] == 4 and epochs[0] == resumed_events[0].resumed_from_epoch + 1
    strip = lambda p: [",".join(r.split(",")[:-1]) for r in p.read_text().splitlines()]  # noqa: E731
    assert strip(run / "history.csv") == strip(tmp_path / "full" / "history.csv")
    assert resumed_events[-1].metrics == full.metrics


@pytest.mark.parametrize("stop_after", [1, 2])
def test_staged_unfreezing_trains_the_head_first_and_resumes_exactly(
    small_example, tmp_path, stop_after
):
    staged = dict(epochs=3, head_epochs=1, freeze="to:stage5", lr=1e-3, l2sp=0.01)
    events = list(train(_config(small_example, tmp_path / "full", **staged)))
    epochs = [e for e in events if isinstance(e, ev.Epoch)]
    assert [e.phase for e in epochs] == ["head", "train", "train"]
    assert any("unfreezing" in e.message for e in events if isinstance(e, ev.Notice))
    # One caching pass for both phases: the head phase trains on the later phase's features.
    assert sum(isinstance(e, ev.Caching) and e.done == 0 for e in events) == 1

    # Stopped after the head phase (then the resume unfreezes with a fresh optimizer) or inside
    # the unfrozen phase (then the optimizer state and the L2-SP reference, the pretrained
    # weights rather than the resumed ones, must carry over): either way, the same run.
    stop = threading.Event()
    for event in train(_config(small_example, tmp_path / "staged", **staged), stop=stop):
        if isinstance(event, ev.Epoch) and event.epoch == stop_after:
            stop.set()
    resumed = list(train(TrainConfig(out=str(tmp_path / "staged"), resume=True)))
    assert resumed[0].resumed_from_epoch == stop_after
    assert [e.phase for e in resumed if isinstance(e, ev.Epoch)] == ["train"] * (3 - stop_after)
    strip = lambda p: [",".join(r.split(",")[:-1]) for r in p.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "staged" / "history.csv") == strip(tmp_path / "full" / "history.csv")
    assert resumed[-1].metrics == events[-1].metrics


def test_early_stopping_restores_the_best_epoch(small_example, tmp_path):
    events = list(
        train(
            _config(
                small_example,
                tmp_path / "run",
                epochs=30,
                patience=1,
                lr=0.5,
                schedule="constant",
                label_smoothing=0.0,
            )
        )
    )
    stopped = [e for e in events if isinstance(e, ev.Stopped)]
    assert stopped and "early stopping" in stopped[0].reason
    epochs = [e for e in events if isinstance(e, ev.Epoch)]
    best = min(epochs, key=lambda e: e.val_loss)
    assert events[-1].best_epoch == best.epoch < epochs[-1].epoch


def test_multilabel_csv_trains_with_per_tag_metrics(tmp_path, example):
    # Tags from the example textures: a tile is "rough" (brick, gravel) and/or "natural" (grass,
    # gravel); every image carries its material and the shared tags.
    rows = ["path,labels"]
    for material, tags in {
        "brick": ["rough"],
        "grass": ["natural"],
        "gravel": ["rough", "natural"],
    }.items():
        for image in sorted((example / material).glob("*.jpg"))[:10]:
            rows.append(f"{image},{';'.join(tags)}")
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    # Absolute paths outside the CSV folder are refused; copy the images next to it instead.
    for line in rows[1:]:
        src = Path(line.split(",")[0])
        write_dest = tmp_path / "img" / src.name
        write_dest.parent.mkdir(exist_ok=True)
        write_dest.write_bytes(src.read_bytes())
    local = ["path,labels"] + [
        f"img/{Path(r.split(',')[0]).name},{r.split(',')[1]}" for r in rows[1:]
    ]
    (tmp_path / "tags.csv").write_text("\n".join(local) + "\n")
    finished = run_training(_config(tmp_path / "tags.csv", tmp_path / "run", epochs=4, lr=3e-3))
    metrics = finished.metrics
    assert metrics["task"] == "multilabel" and set(metrics["labels"]) == {"natural", "rough"}
    assert metrics["mAP"] > 0.7
    assert set(metrics["per_class"]["rough"]) >= {"precision", "recall", "f1", "ap"}


def test_bad_settings_fail_before_any_work(small_example, tmp_path):
    with pytest.raises(StudioError, match="epochs"):
        list(train(_config(small_example, tmp_path / "a", epochs=0)))
    with pytest.raises(StudioError, match="unknown group"):
        list(train(_config(small_example, tmp_path / "b", freeze="to:wings")))
    assert not (tmp_path / "b" / "config.json").exists()


def test_tiny_images_and_write_image_helper(tmp_path):
    write_image(tmp_path / "a" / "x.png")
    assert (tmp_path / "a" / "x.png").stat().st_size > 0


def test_names_that_are_not_utf8_train_and_a_failed_set_up_can_be_retried(small_example, tmp_path):
    """Folder and file names in Windows-1252 (as old zips have them) train, with readable class
    names; a folder left by a set-up that failed does not block the retry."""
    import os
    import shutil

    data = os.fsencode(tmp_path / "data")
    for cls in ("brick", "grass"):
        folder = data + b"/" + cls.encode() + b"-caf\xe9"
        os.makedirs(folder)
        for i, image in enumerate(sorted((small_example / cls).glob("*.jpg"))[:8]):
            shutil.copy(image, folder + b"/pic\xe9" + str(i).encode() + b".jpg")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a set-up killed half-way leaves
    (out / "split.csv").write_text("half")
    run_training(_config(os.fsdecode(data), out, epochs=1))
    labels = json.loads((out / "labels.json").read_text())["labels"]
    assert labels == ["brick-café", "grass-café"]
    with open(out / "split.csv", newline="", errors="surrogateescape") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    assert all(Path(os.fsdecode(data), p).is_file() for p in paths)
    with pytest.raises(StudioError, match="already holds a run"):  # a real run is kept
        run_training(_config(os.fsdecode(data), out, epochs=1))


def test_two_people_training_at_once_get_the_solo_result(small_example, tmp_path):
    """Seeded runs repeat exactly even while another run trains in the same process (a
    classroom on one app): randomness (head init, augmentation, dropout) is per run."""
    kw = dict(augment="light", epochs=3, freeze="6")  # augmented views and dropout both draw

    def history(out):
        return [(r["train_loss"], r["val_loss"]) for r in _rows(out / "history.csv")]

    run_training(_config(small_example, tmp_path / "solo", **kw))
    results = {}

    def one(name, seed):
        results[name] = run_training(_config(small_example, tmp_path / name, seed=seed, **kw))

    threads = [threading.Thread(target=one, args=(f"p{i}", s)) for i, s in enumerate((0, 7, 0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert history(tmp_path / "p0") == history(tmp_path / "solo")
    assert history(tmp_path / "p2") == history(tmp_path / "solo")
    assert history(tmp_path / "p1") != history(tmp_path / "solo")  # another seed differs


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_score_on_the_training_pictures_is_not_called_a_test_score(tmp_path, small_example):
    """With one picture per class nothing can be kept back: say so, everywhere it is shown."""
    import shutil

    from studio.inspection.evaluate import score_words
    from studio.jobs import TrainingJob

    data = tmp_path / "data"
    for cls in ("brick", "grass"):
        (data / cls).mkdir(parents=True)
        shutil.copy(sorted((small_example / cls).glob("*.jpg"))[0], data / cls / "one.jpg")
    job = TrainingJob(_config(data, tmp_path / "run", epochs=1)).start()
    assert job.wait(120)
    snap = job.snapshot()
    assert snap.metrics["split"] == "train"
    assert "not a test score" in snap.message and "pictures it learnt from" in snap.message
    assert "Not a test score" in (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert "not a test" not in score_words({"accuracy": 0.9, "n": 10, "split": "test"})


def test_a_dataset_handed_in_must_be_the_one_the_settings_describe(tmp_path, small_example):
    """One way in: the settings are what config.json records and a resume loads, so a loaded
    dataset split another way (or other pictures) is refused before any work, with the reason."""
    from studio.data.dataset import load_dataset
    from studio.errors import StudioError
    from studio.training.train import train

    other_split = load_dataset(small_example, seed=3, val_fraction=0.3)
    with pytest.raises(StudioError, match="seed 3.*settings say 0.*holds back"):
        list(train(_config(small_example, tmp_path / "run"), other_split))
    elsewhere = _config(tmp_path / "elsewhere", tmp_path / "run2")
    with pytest.raises(StudioError, match="the settings name"):
        list(train(elsewhere, load_dataset(small_example)))
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_one_decode_checks_the_pictures_and_gives_the_training_their_features(
    small_example, tmp_path, monkeypatch
):
    """``studio train DATA`` decodes each picture once (issue 13): the check's worker processes
    run the frozen backbone on what they have just decoded, the training computes no feature
    again, and pictures whose features are known are not run through the backbone again."""
    from dataclasses import replace

    import numpy as np

    from studio.data import facts
    from studio.data.dataset import load_dataset
    from studio.domain.pictures import PictureSet
    from studio.domain.shift import Embedder
    from studio.inspection.evaluate import evaluate_run
    from studio.training.feature_pass import PooledFeatures
    from studio.training.train import load_training_data

    monkeypatch.setattr(facts, "PROCESSES_FROM", 1)  # worker processes for 36 pictures
    facts.MEMO.clear()
    cfg = TrainConfig(data=str(small_example), out=str(tmp_path / "run"), epochs=2,
                      augment="none").validate()  # fmt: skip
    seen: list[tuple[int, int]] = []
    dataset = load_training_data(cfg, progress=lambda d, t: seen.append((d, t)), features=True)
    samples = dataset.train + dataset.val + dataset.test
    assert seen[-1] == (len(samples), len(samples))
    kept = PooledFeatures.for_config(cfg).memo().get_many([facts.facts_of(s.path).sha1
                                                           for s in samples])  # fmt: skip
    assert sorted(kept) == list(range(len(samples)))
    pictures = PictureSet(dataset.root, [s.path for s in samples], [None] * len(samples))
    own, _, _ = Embedder.from_backbone(cfg.backbone).embed(pictures)
    np.testing.assert_allclose(np.stack([kept[i] for i in range(len(samples))]), own,
                               rtol=1e-3, atol=1e-4)  # fmt: skip

    def not_again(*args, **kwargs):
        raise AssertionError("the test pictures were run through the backbone again")

    with monkeypatch.context() as patched:  # measured on the check's features of them
        patched.setattr("studio.training.train.evaluate_samples", not_again)
        events = list(train(cfg, dataset))
    assert max(e.of for e in events if isinstance(e, ev.Caching)) == 0  # nothing to compute
    reused = len(dataset.train) + len(dataset.val)
    assert any(e.message.startswith(f"{reused} picture(s) already seen by this backbone")
               for e in events if isinstance(e, ev.Notice))  # fmt: skip
    finished = events[-1]
    assert finished.kind == "finished" and finished.metrics["accuracy"] > 0.8
    measured, _ = evaluate_run(cfg.out, small_example)  # the saved model on the pictures
    assert measured["split"] == finished.metrics["split"] == "test"
    for a, b in zip(measured["predictions"], finished.metrics["predictions"], strict=True):
        assert a["predicted"] == b["predicted"] and abs(a["confidence"] - b["confidence"]) < 1e-4

    # Weights that cannot be loaded are refused in one sentence before any worker starts.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    facts.MEMO.clear()
    with pytest.raises(StudioError, match="bad.safetensors"):
        load_training_data(replace(cfg, weights_file=str(bad)), features=True)

    facts.MEMO.clear()  # checked again: decoded, but not run through the backbone again
    again = PooledFeatures.for_config(cfg)
    load_dataset(small_example, looker=again)
    assert again.computed == 0 and facts.MEMO.decoded >= len(samples)
