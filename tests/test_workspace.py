"""The engine behind the app's Data and Train tabs: workspaces, uploads and background jobs."""

from __future__ import annotations

import threading
import zipfile

import pytest
from helpers import write_image

from studio import events as ev
from studio.errors import DataError, StudioError
from studio.inspection import charts
from studio.jobs import TrainingJob
from studio.runs import describe_run
from studio.training.train import TrainConfig
from studio.workspace import Workspace, clean_class_name


def test_classes_can_be_added_renamed_and_deleted(tmp_path):
    ws = Workspace(tmp_path)
    assert Workspace(tmp_path, ws.id).root == ws.root  # the same id opens the same folder
    assert Workspace(tmp_path, "../../etc").root.parent == tmp_path  # bad ids get a new folder
    ws.add_class("apples")
    ws.add_class("pears")
    assert ws.rename_class("pears", "green pears") == "green pears"
    with pytest.raises(StudioError, match="already exists"):
        ws.rename_class("apples", "green pears")
    ws.delete_class("apples")
    assert ws.classes() == ["green pears"]
    for bad in ["", "../up", "a/b", "x" * 41]:
        with pytest.raises(StudioError):
            clean_class_name(bad)


def test_uploads_are_checked_and_refusals_reported(tmp_path):
    ws = Workspace(tmp_path / "ws")
    good = write_image(tmp_path / "in" / "cat 1.png")
    fake = tmp_path / "in" / "fake.jpg"
    fake.write_text("not a picture")
    notes = tmp_path / "in" / "notes.txt"
    notes.write_text("hello")
    report = ws.add_images("cats", [good, good, fake, notes])
    assert report.added == 2 and len(ws.images("cats")) == 2  # same name twice: both kept
    reasons = dict(report.skipped)
    assert "not an image" in reasons["fake.jpg"] and "not a picture file" in reasons["notes.txt"]
    assert "Skipped 2" in report.message()


def test_zip_import_and_bad_zips(tmp_path, example):
    ws = Workspace(tmp_path / "ws")
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("brick", "grass"):
            for image in sorted((example / name).glob("*.jpg"))[:3]:
                zf.write(image, f"pets/{name}/{image.name}")
        zf.writestr("pets/readme.txt", "hi")
    report = ws.import_zip(archive)
    assert report.added == 6 and ws.classes() == ["brick", "grass"]
    assert ("readme.txt", "not inside a class folder") in report.skipped
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(DataError, match="empty"):
        ws.import_zip(empty)


def test_example_then_a_background_job_that_can_be_stopped(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load_example()
    assert ws.counts() == {"brick": 36, "grass": 36, "gravel": 36}
    first = ws.dataset()
    assert ws.dataset() is first  # nothing changed: not decoded again
    ws.add_images("grass", [write_image(tmp_path / "new.png", size=(80, 80), seed=99)])
    assert ws.dataset() is not first and ws.dataset().report.total == 109
    ws.delete_class("grass")
    ws.load_example()
    with pytest.raises(StudioError, match="no run called"):
        ws.resolve_run("../../etc")
    config = TrainConfig(
        data=str(ws.data_dir),
        out=str(ws.new_run_dir("demo", ws.classes())),
        epochs=50,
        augment="none",
        batch_size=16,
    )
    job = TrainingJob(config)

    class StopAfterTheFirstEpoch(list):
        """Presses Stop from inside the run: on a busy machine, a Stop pressed from here
        could arrive after a cached run's 50 epochs had ended by themselves."""

        def append(self, event):
            super().append(event)
            if isinstance(event, ev.Epoch):
                job.stop()

    job.events = StopAfterTheFirstEpoch()
    job.start()
    assert job.wait(120)
    snap = job.snapshot()
    assert snap.state == "stopped" and 1 <= len(snap.epochs) < 50
    assert snap.metrics["accuracy"] > 0.5
    assert [p.name for p in ws.runs()] == [config.out.rsplit("/", 1)[-1]]
    listed = describe_run(ws.runs()[0])  # the run list says how far it got, not what was planned
    assert listed["epochs_run"] == len(snap.epochs) and listed["epochs"] == 50
    assert listed["classes"] == ["brick", "grass", "gravel"]
    figure = charts.training_curves({"run": [e.to_dict() for e in snap.epochs]})
    assert len(figure.data) == 4 and len(figure.data[0].x) == len(snap.epochs)


def test_a_failing_job_reports_instead_of_raising(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load_example()
    job = TrainingJob(
        TrainConfig(data=str(ws.data_dir), out=str(tmp_path / "r"), backbone="resnet50")
    ).start()
    assert job.wait(60)
    snap = job.snapshot()
    assert snap.state == "failed" and "no pretrained weights" in snap.message


def test_the_example_never_replaces_a_persons_own_pictures(tmp_path):
    """Loading the example puts it beside the person's pictures; their runs keep working."""
    ws = Workspace(tmp_path / "ws")
    mine = [write_image(tmp_path / f"cat{i}.png", size=(64, 64), seed=i) for i in range(3)]
    ws.add_images("cats", mine)
    own_folder = ws.data_dir
    report = ws.load_example()
    assert report.added == 108 and ws.active == "example"
    assert ws.classes() == ["brick", "grass", "gravel"]
    assert sorted(p.name for p in (own_folder / "cats").iterdir()) == [
        "cat0.png",
        "cat1.png",
        "cat2.png",
    ]
    assert [(k, n) for k, _, n in ws.picture_sets()] == [("mine", 3), ("example", 108)]
    ws.use("mine")
    assert ws.classes() == ["cats"] and ws.data_dir == own_folder
    # Loading it again puts back what was deleted from the example and keeps what was added.
    ws.load_example()
    ws.delete_class("brick")
    ws.add_images("grass", mine[:1])
    assert ws.load_example().added == 36
    assert ws.counts() == {"brick": 36, "grass": 37, "gravel": 36}


def test_time_left_is_paced_by_the_current_step_not_the_caching():
    """Ten seconds of caching, then one of ten epochs in a second: about 9 s are left, not 99."""
    from studio import events as ev
    from studio.jobs import seconds_left

    caching = [ev.Caching(done, 100) for done in (0, 50, 100)]
    batches = [ev.Batch(epoch, n, 4, 0.5) for epoch in (1, 2) for n in (1, 2, 3, 4)][:5]
    times = [0.0, 5.0, 10.0] + [10.0 + 0.25 * i for i in range(5)]
    assert seconds_left(caching[:2], times[:2], 5.0, 10) == pytest.approx(5.0)
    left = seconds_left(caching + batches, times, 11.0, 10)
    assert left == pytest.approx(9.0, rel=0.05)


def test_refused_uploads_are_remembered_for_the_report(tmp_path):
    ws = Workspace(tmp_path / "ws")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("not a picture")
    report = ws.add_images("apples", [fake, write_image(tmp_path / "ok.png", size=(40, 40))])
    assert report.added == 1
    assert [name for name, _ in ws.refused()] == ["apples/holiday.jpg"]
    ws.load_example()  # the example's own list starts empty; the person's is kept
    assert ws.refused() == []
    ws.use("mine")
    assert len(ws.refused()) == 1


def test_a_workspace_opens_only_with_its_browsers_key(tmp_path):
    """Knowing a workspace's id (its folder name) opens nothing; the browser's key does."""
    from studio.owners import Owners

    owners = Owners(tmp_path)
    key, mine = owners.open(None)
    mine.add_class("private")
    assert owners.open(key)[1].root == mine.root
    for attempt in (mine.id, "../" + mine.id, key[:-1] + ("A" if key[-1] != "A" else "B"), ""):
        other_key, other = owners.open(attempt)
        assert other.root != mine.root and other.classes() == [] and other_key != key
    assert Owners(tmp_path).open(key)[1].root == mine.root  # a restarted app, same key
    # A workspace from before keys is claimed once, by the first browser that holds its id.
    old = Workspace(tmp_path)
    new_key, claimed = owners.open(old.id)
    assert claimed.root == old.root and new_key != old.id
    assert owners.open(old.id)[1].root != old.root


def test_trainings_wait_in_line_and_a_waiting_one_can_be_cancelled(tmp_path, small_example):
    """One place: the second job waits, says its place, is cancelled leaving nothing behind;
    the third starts once the first is done."""
    import threading

    from studio.jobs import JobQueue

    queue = JobQueue(limit=1)
    release = threading.Event()

    class HeldAfterTheFirstEvent(list):  # keeps the first job busy until the test lets it go
        def append(self, event):
            super().append(event)
            release.wait(120)

    def job(name):
        cfg = TrainConfig(data=str(small_example), out=str(tmp_path / name), epochs=1)
        return TrainingJob(cfg, queue=queue)

    first, second, third = job("first"), job("second"), job("third")
    first.events = HeldAfterTheFirstEvent()
    first.start()
    while not first.events:
        first.wait(0.05)
    second.start()
    third.start()
    while queue.place(third) is None:
        third.wait(0.05)
    assert second.snapshot().state == "queued" and "number 1 in line" in second.snapshot().message
    assert "number 2 in line" in third.snapshot().message
    second.stop()
    assert second.wait(30) and second.snapshot().state == "cancelled"
    assert not (tmp_path / "second").exists()
    assert "number 1 in line" in third.snapshot().message
    release.set()
    assert first.wait(120) and third.wait(120)
    assert third.snapshot().state == "finished"


def test_a_zip_of_one_class_folder_adds_that_class(tmp_path):
    """pears.zip holding pears/*.jpg adds the class 'pears' (it was refused as holding none)."""
    ws = Workspace(tmp_path / "ws")
    archive = tmp_path / "pears.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.write(write_image(tmp_path / f"{i}.png", size=(40, 40), seed=i), f"pears/{i}.png")
    report = ws.import_zip(archive)
    assert report.classes == ["pears"] and report.added == 3 and ws.classes() == ["pears"]


def test_any_event_stream_is_a_job_with_the_same_snapshot_and_stop():
    from studio import events as ev
    from studio.jobs import Job, JobQueue

    started = threading.Event()

    def stream(stop):  # a stand-in for compression or adaptation: epochs until stopped
        epoch = 0
        while not stop.is_set():
            epoch += 1
            yield ev.Batch(epoch, 1, 1, 0.5)
            yield ev.Epoch(epoch, 100, 0.5, 0.8, 0.6, 0.7, 1e-3, 0.01)
            started.set()
            stop.wait(0.01)
        yield ev.Stopped("stopped by user", epoch)

    job = Job("compression", stream, total_epochs=100, queue=JobQueue(limit=1)).start()
    assert started.wait(60)
    snap = job.snapshot()
    assert snap.state == "training" and snap.epochs and 0 < snap.fraction < 1
    job.stop()
    assert job.wait(60)
    assert job.snapshot().state == "stopped" and job.error is None


def test_the_job_registry_gives_each_workspace_and_kind_one_slot():
    from studio.errors import StudioError
    from studio.jobs import JobRegistry

    jobs = JobRegistry()
    results = []

    def click():  # thirty clicks on Start at once: one claim wins
        try:
            jobs.claim("ws", "training")
            results.append("won")
        except StudioError:
            results.append("refused")

    threads = [threading.Thread(target=click) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("won") == 1
    jobs.claim("ws", "compression")  # another kind has its own slot
    jobs.claim("other", "training")  # and so has another workspace
    placeholder = jobs.get("ws", "training")
    placeholder.stop()  # Stop pressed while the job is being set up

    class Started:
        done, stopped = False, False

        def stop(self):
            self.stopped = True

    job = Started()
    jobs.hand_over("ws", "training", job)
    assert job.stopped and jobs.get("ws", "training") is job
    jobs.release("other", "training")
    assert jobs.get("other", "training") is None
    jobs.claim("other", "training")
