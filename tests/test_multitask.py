"""Several tasks on one backbone: the CSV, the loss, training, evaluation, prediction, export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error

from studio.data.dataset import load_dataset
from studio.data.example import multitask_example
from studio.data.tasks import Tasks
from studio.errors import DataError, StudioError
from studio.training.multitask import MultiTaskLoss


@pytest.fixture(scope="module")
def tasks_csv() -> Path:
    return multitask_example()


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory, tasks_csv) -> Path:
    """The example's two tasks, heads solved exactly on the frozen backbone."""
    from studio.training.train import TrainConfig, run_training

    out = tmp_path_factory.mktemp("mt") / "run"
    run_training(TrainConfig(data=str(tasks_csv), out=str(out), epochs=3, augment="none"))
    return out


def _copy_with_csv(source: Path, dest: Path, text: str) -> Path:
    shutil.copytree(source / "pictures", dest / "pictures")
    (dest / "labels.csv").write_text(text)
    return dest / "labels.csv"


# --------------------------------------------------------------------------- the layout


def test_tasks_cut_the_outputs_into_blocks():
    tasks = Tasks.build([("material", ["grass", "brick"], False), ("tags", ["b", "a", "c"], True)])
    assert tasks.flat_labels == [
        "material: brick", "material: grass", "tags: a", "tags: b", "tags: c"
    ]  # fmt: skip
    logits = torch.tensor([[2.0, -1.0, 3.0, -3.0, 0.0]])
    probs = tasks.probabilities(logits)[0]
    assert probs[:2].sum() == pytest.approx(1.0)  # a softmax over the single-label task
    assert probs[2:].tolist() == pytest.approx(torch.sigmoid(logits[0, 2:]).tolist())
    assert tasks.answers(logits[0].numpy()) == {"material": "brick", "tags": "a;c"}
    assert tasks.local_labels((1, 2, 4)) == [(1,), (0, 2)]
    other = logits.numpy().copy()
    other[0, 1] = 5.0  # the material answer flips, the tags stay
    assert tasks.agreement(other, logits.numpy()) == 0.5
    assert Tasks.from_json(tasks.to_json(), tasks.flat_labels) == tasks
    with pytest.raises(ValueError, match="do not match"):
        Tasks.from_json(tasks.to_json(), tasks.flat_labels[::-1])


def test_equal_and_learned_task_weights():
    tasks = Tasks.build([("a", ["x", "y"], False), ("b", ["p", "q", "r"], False)])
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(8, 5)
    y[torch.arange(8), torch.arange(8) % 2] = 1
    y[torch.arange(8), 2 + torch.arange(8) % 3] = 1
    equal = MultiTaskLoss(tasks)
    own = [
        torch.nn.functional.cross_entropy(logits[:, :2], y[:, :2].argmax(1)),
        torch.nn.functional.cross_entropy(logits[:, 2:], y[:, 2:].argmax(1)),
    ]
    assert float(equal(logits, y)) == pytest.approx(float(sum(own) / 2))
    learned = MultiTaskLoss(tasks, learned=True)
    assert learned(logits, y).item() == pytest.approx(equal(logits, y).item())  # s = 0 at start
    learned(logits, y).backward()
    # d/ds (exp(-s) L + s/2) / 2 at s = 0 is (1/2 - L) / 2: a task with a loss above 1/2 is
    # weighed down as it trains.
    expected = [(0.5 - float(v)) / 2 for v in own]
    assert learned.log_vars.grad.tolist() == pytest.approx(expected, rel=1e-5)
    assert set(learned.weights()) == {"a", "b"}


# --------------------------------------------------------------------------- the CSV


def test_the_example_csv_is_two_tasks_stratified(tasks_csv):
    ds = load_dataset(tasks_csv)
    assert ds.tasks.names == ["material", "colour"]
    assert ds.classes == ds.tasks.flat_labels and ds.classes[0] == "material: brick"
    assert all(len(s.labels) == 2 for part in ds.splits.values() for s in part)
    # Stratified by the pair of values: every (material, colour) pair is in every split.
    for part in ds.splits.values():
        assert len({s.labels for s in part}) == 9
    assert "2 tasks: material, colour" in ds.report.summary()
    assert "task 'colour' (one value a picture): blue, natural, red" in ds.report.summary()
    one = load_dataset(tasks_csv, tasks=["colour"])
    assert one.tasks.names == ["colour"] and len(one.classes) == 3


def test_bad_csvs_say_what_is_wrong(tasks_csv, tmp_path):
    head = "path,material,colour\n"
    rows = (tasks_csv / "labels.csv").read_text().splitlines()[1:]
    csv_file = _copy_with_csv(tasks_csv, tmp_path / "d", head + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match="no column 'shape'.*path, material, colour"):
        load_dataset(csv_file, tasks=["material", "shape"])
    csv_file.write_text(
        "path,material,colour\n" + "".join(f"{r.rsplit(',', 1)[0]},\n" for r in rows)
    )
    with pytest.raises(DataError, match="column 'colour' of labels.csv is empty"):
        load_dataset(csv_file)
    csv_file.write_text(head + "".join(f"{r.rsplit(',', 1)[0]},red\n" for r in rows))
    with pytest.raises(DataError, match="task 'colour' has only one value"):
        load_dataset(csv_file)
    broken = [rows[0].rsplit(",", 1)[0] + ",", "pictures/nowhere.jpg,brick,red", *rows[1:]]
    csv_file.write_text(head + "\n".join(broken) + "\n")
    ds = load_dataset(csv_file)
    reasons = {Path(s.path).name: s.reason for s in ds.report.skipped}
    assert reasons[Path(rows[0].split(",")[0]).name].startswith("no value for 'colour'")
    assert "listed in labels.csv:3 but not found" in reasons["nowhere.jpg"]
    with pytest.raises(DataError, match="come from a CSV's columns"):
        load_dataset(multitask_example().parent / "example", tasks=["material"])


# --------------------------------------------------------------------------- a run


def test_training_evaluating_predicting_a_multitask_run(multitask_run, tasks_csv):
    from studio.deployment.predict import Predictor
    from studio.inspection.evaluate import evaluate_run

    metrics = json.loads((multitask_run / "metrics.json").read_text())
    assert metrics["task"] == "multitask" and set(metrics["tasks"]) == {"material", "colour"}
    for m in metrics["tasks"].values():
        assert m["accuracy"] > 0.7 and len(m["confusion_matrix"]) == 3  # chance is 1/3
    assert metrics["accuracy"] == pytest.approx(
        np.mean([m["accuracy"] for m in metrics["tasks"].values()])
    )
    labels = json.loads((multitask_run / "labels.json").read_text())
    assert [t["name"] for t in labels["tasks"]] == ["material", "colour"]
    card = (multitask_run / "MODEL_CARD.md").read_text()
    assert (
        "**2 questions**" in card
        and "- **colour** (one value a picture): blue, natural, red" in card
    )
    events = (multitask_run / "events.jsonl").read_text()
    assert "fitting each task's last layer exactly" in events

    again, _ = evaluate_run(multitask_run, tasks_csv)
    assert again["tasks"]["material"]["accuracy"] == metrics["tasks"]["material"]["accuracy"]
    picture = next((tasks_csv / "pictures").glob("gravel_blue_*.jpg"))
    (answer,) = Predictor(multitask_run).predict([picture])
    assert set(answer.tasks) == {"material", "colour"}
    assert answer.tasks["material"]["answer"] == "gravel"
    assert answer.tasks["colour"]["answer"] == "blue"
    assert sum(p for _, p in answer.tasks["colour"]["top"]) == pytest.approx(1.0, abs=1e-4)


def test_export_gives_one_named_output_per_task(multitask_run):
    import onnxruntime as ort

    from studio.deployment.export import export_run

    result = export_run(multitask_run, "onnx")
    assert result.agreement == 1.0 and result.max_abs_diff < 1e-3
    session = ort.InferenceSession(str(multitask_run / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["material", "colour"]
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    material, colour = session.run(None, {"image": x})
    assert material.shape == (2, 3) and colour.shape == (2, 3)
    # The code shown beside the download (and run on the unpacked zip before it is called
    # checked) prints each task's answer for a picture beside the model.
    import shutil
    import subprocess
    import sys

    from studio.deployment.export import check_images
    from studio.deployment.samples import samples_for

    shutil.copy(check_images(multitask_run, 1)[0], multitask_run / "photo.jpg")
    printed = subprocess.run([sys.executable, "-c", samples_for(True)["onnx"]],
                             cwd=multitask_run, capture_output=True, text=True)  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    answer = printed.stdout.strip()  # "material: brick, colour: blue"
    assert [part.split(":")[0] for part in answer.split(", ")] == ["material", "colour"], answer


def test_compression_and_adaptation_refuse_a_multitask_run(multitask_run, tmp_path):
    from studio.compress.quantize import quantize_run
    from studio.domain.adapt import adapt_run

    with pytest.raises(StudioError, match="single-task runs for now.*material, colour"):
        list(quantize_run(multitask_run, tmp_path / "q"))
    with pytest.raises(StudioError, match="single-task runs for now"):
        list(adapt_run(multitask_run, tmp_path, tmp_path / "a"))
    assert not (tmp_path / "q").exists()


def test_learned_weights_tags_and_resume(tasks_csv, tmp_path):
    """A multi-label column beside a single-label one, trained by epochs with learned task
    weights; killed after an epoch, the resumed run keeps the weights it had learned."""
    from studio.training.train import TrainConfig, run_training, train

    rows = (tasks_csv / "labels.csv").read_text().splitlines()[1:]
    marks = ["", "edge", "edge;dark"]
    text = "path,material,marks\n" + "".join(
        f"{r.split(',')[0]},{r.split(',')[1]},{marks[i % 3] or 'plain'}\n"
        for i, r in enumerate(rows)
    )
    csv_file = _copy_with_csv(tasks_csv, tmp_path / "d", text)
    cfg = TrainConfig(data=str(csv_file), out=str(tmp_path / "run"), epochs=3, augment="none",
                      task_weights="uncertainty", lr=0.01)  # fmt: skip
    events = train(cfg)
    for event in events:
        if event.kind == "checkpoint":
            break  # the first epoch's checkpoint: the run is "killed" here
    events.close()
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    learned = saved["task_loss"]["log_vars"]
    assert learned.abs().max() > 0  # the weights moved in the first epoch
    run_training(TrainConfig(out=str(tmp_path / "run"), resume=True))
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert set(info["task_weights"]) == {"material", "marks"}
    assert all(w != 1.0 for w in info["task_weights"].values())
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert [t["multilabel"] for t in labels["tasks"]] == [False, True]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tasks"]["marks"]["task"] == "multilabel"
    assert metrics["tasks"]["material"]["task"] == "single-label"


def test_cli_trains_with_tasks_and_refuses_bad_ones(tasks_csv, tmp_path, capsys):
    from studio.cli import main

    run = tmp_path / "run"
    argv = ["train", str(tasks_csv / "labels.csv"), "--tasks", "colour", "--out",
            str(run), "--epochs", "2", "--preset", "custom"]  # fmt: skip
    assert main(argv) == 0  # one task of the two: a model for it alone
    out = capsys.readouterr().out
    assert "mean accuracy over the tasks" in out and "colour" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"colour"} and metrics["tasks"]["colour"]["accuracy"] > 0.7
    picture = next((tasks_csv / "pictures").glob("grass_red_*.jpg"))
    assert main(["predict", str(run), str(picture)]) == 0
    assert "colour red" in capsys.readouterr().out
    assert_one_line_error(
        capsys,
        ["train", tasks_csv, "--tasks", "shape", "--out", tmp_path / "r2"],
        "no column 'shape'",
    )
    assert_one_line_error(
        capsys, ["train", tasks_csv, "--task-weights", "equal", "--tasks", "a,,b", "--out",
                 tmp_path / "r3"], "tasks must be column names"
    )  # fmt: skip


# --------------------------------------------------------------------------- the app's table set


def test_a_workspace_table_set_imports_merges_and_refuses(tasks_csv, tmp_path):
    import zipfile

    from studio.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    report = ws.load_multitask_example()
    assert report.added == 108 and ws.is_table and ws.classes() == []
    assert ws.dataset().tasks.names == ["material", "colour"]
    assert len(ws.images("material: brick")) == 36
    with pytest.raises(StudioError, match="labelled by its table"):
        ws.add_class("apples")
    # A zip with a table goes into the table set: rows merge, a broken picture is named.
    (tmp_path / "broken.jpg").write_text("not a picture")
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as zf:
        zf.writestr("mine/labels.csv", "path,material,colour\nextra/a.jpg,brick,red\n"
                    "extra/b.jpg,grass,blue\n")  # fmt: skip
        zf.write(next((tasks_csv / "pictures").glob("brick_red_*.jpg")), "mine/extra/a.jpg")
        zf.write(tmp_path / "broken.jpg", "mine/extra/b.jpg")
    ws.use("mine")
    report = ws.import_zip(tmp_path / "more.zip")
    assert ws.is_table and report.added == 1 and report.skipped[0][0] == "extra/b.jpg"
    assert ws.dataset().report.total == 109
    assert any("extra/b.jpg" in name for name, _ in ws.refused())
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("labels.csv", "path,species\nx.jpg,cat\n")
    with pytest.raises(DataError, match="the table here has the columns path, material, colour"):
        ws.import_zip(tmp_path / "other.zip")
    assert ws.empty_table() == 110  # 109 pictures and the table
    assert ws.counts() == {}


def test_the_app_handlers_show_each_task(multitask_run, tasks_csv, tmp_path):
    from types import SimpleNamespace

    from studio.ui.common import Context
    from studio.ui.evaluate_tab import cell_pictures, show_run
    from studio.ui.explain_tab import from_top_loss
    from studio.ui.export_tab import code_for_run
    from studio.ui.predict_tab import Predictors, predict_many

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    shutil.copytree(multitask_run, ws.runs_dir / "tasks")
    head, _, table, rows, _, _, picker = show_run(ctx, ws.id, "tasks", "colour")
    assert "**colour**: accuracy" in head and picker["value"] == "colour" and picker["visible"]
    assert table["headers"] == ["true \\ predicted", "blue", "natural", "red"]
    title, *_ = cell_pictures(ctx, ws.id, "tasks", "colour", SimpleNamespace(index=(0, 1)))
    assert "of blue predicted as blue" in title
    opened = from_top_loss(ctx, ws.id, "tasks", "colour", SimpleNamespace(index=0))
    assert opened[3].startswith("colour: ")  # the model's class, for the Explain tab
    codes = code_for_run(ctx, ws.id, "tasks")
    assert all('info["tasks"]' in code for code in codes)
    picture = str(next((tasks_csv / "pictures").glob("brick_blue_*.jpg")))
    table, _ = predict_many(Predictors(ctx), ws.id, "tasks", [picture], lambda *a, **k: None)
    assert table["headers"] == ["picture", "material", "colour"]
    assert table["data"][0][1:] == ["brick", "blue"]
