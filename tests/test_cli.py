"""The CLI contract: defaults that train a good model, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def studio(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STUDIO_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "studio", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=600,
    )


def test_train_with_defaults_on_the_example_reaches_high_accuracy(example, tmp_path, capsys):
    from studio.cli import main

    run = tmp_path / "run"
    result = studio("train", example, "--out", run)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] >= 15
    assert metrics["accuracy"] >= 0.9  # chance is 1/3
    config = json.loads((run / "config.json").read_text())
    assert config["backbone"] == "tf_efficientnet_lite0"
    # The automatic preset says what it chose, and why, and the run records it.
    assert "chosen automatically" in result.stdout and f"preset {config['preset']}" in result.stdout
    assert config["preset"] in ("quick", "balanced", "thorough")

    # The run as the other commands read it, through the same main() in this process (a
    # process each would cost a torch import each; the train command above is the real one).
    capsys.readouterr()
    assert main(["evaluate", str(run), str(example), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == metrics["accuracy"]

    pictures = sorted((example / "grass").glob("*.jpg"))[-2:]
    assert main(["predict", str(run), *map(str, pictures), "--json", "--top-k", "2"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["top"][0]["label"] for a in answers] == ["grass", "grass"]
    assert len(answers[0]["top"]) == 2 and 0 < answers[0]["top"][0]["probability"] <= 1


def test_bad_input_exits_2_with_one_line(tmp_path, trained_run, capsys):
    # The real command once (exit status and stderr of a process), then the other cases
    # in-process through the same main(): a subprocess each would cost a torch import each.
    result = studio("train", tmp_path / "missing", "--out", tmp_path / "r")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'} does not exist"]

    from studio.cli import main

    example = ROOT / "assets" / "example"
    (tmp_path / "fake.jpg").write_text("not a picture")
    cases = [
        (("train", example, "--out", tmp_path / "r2", "--backbone", "nonsense"), "nonsense"),
        (("train", example, "--out", tmp_path / "r3", "--backbone", "resnet18"), "no pretrained"),
        (("train", example, "--out", tmp_path / "r4", "--freeze", "to:wings"), "wings"),
        (("evaluate", tmp_path / "no-run", example), "no-run"),
        (("export", tmp_path / "no-run", "--format", "onnx"), "no-run"),
    ]
    for args, reason in cases:
        code = main([str(a) for a in args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(err) == 1 and err[0].startswith("error: ") and reason in err[0], (args, err)
    assert not (tmp_path / "r3" / "model.safetensors").exists()  # never trained from random
    assert main(["predict", str(trained_run), str(tmp_path / "fake.jpg")]) == 2
    assert "cannot read" in capsys.readouterr().out


def test_argument_errors_exit_2():
    assert studio("train").returncode == 2
    assert studio("train", "x", "--epochs", "0").returncode == 2


def test_backbones_lists_the_catalog_and_says_what_is_offline():
    result = studio("backbones", "--json")
    assert result.returncode == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert len(rows) >= 8
    assert rows["tf_efficientnet_lite0"]["pretrained_available"] is True
    assert rows["resnet50"]["pretrained_available"] is False
    text = studio("backbones").stdout
    assert "NOT AVAILABLE offline" in text and "bundled" in text


def test_data_command_prints_the_report(example):
    result = studio("data", example)
    assert result.returncode == 0
    assert "108 images in 3 classes" in result.stdout


@pytest.mark.slow
def test_lr_find_suggests_a_rate(example):
    result = studio("lr-find", example, "--json")
    assert result.returncode == 0, result.stderr
    suggestion = json.loads(result.stdout)["suggestion"]
    assert 1e-5 < suggestion < 1


def _crafted_zip(path, flag_bits: int = 0, method: int | None = None) -> None:
    """A zip whose member claims a password (flag bit 0) or a method like PPMd (98), made by
    editing the headers: Python's zipfile writes neither."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in ("a/1.jpg", "b/2.jpg"):
            zf.writestr(name, b"x" * 10)
    data = bytearray(path.read_bytes())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = 0
        while (at := data.find(sig, start)) != -1:
            data[at + flag_at] |= flag_bits
            if method is not None:
                data[at + method_at : at + method_at + 2] = method.to_bytes(2, "little")
            start = at + 4
    path.write_bytes(bytes(data))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the refused file's own warning
def test_hostile_files_and_tampered_runs_get_one_line_and_exit_2(tmp_path, trained_run, capsys):
    """Each case once answered 'internal error' (exit 1) or a six-line message."""
    import os
    import pickle
    import shutil

    from studio.cli import main

    _crafted_zip(tmp_path / "locked.zip", flag_bits=1)
    _crafted_zip(tmp_path / "ppmd.zip", method=98)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "code.pth").write_bytes(pickle.dumps(os.getcwd))  # would run code if unpickled
    long_name = tmp_path / ("d" * 240)
    shutil.copytree(ROOT / "assets" / "example", long_name)
    picture = sorted((ROOT / "assets" / "example" / "grass").glob("*.jpg"))[0]

    def tampered(name: str, file: str, change) -> str:
        run = tmp_path / name
        shutil.copytree(trained_run, run)
        data = json.loads((run / file).read_text())
        change(data)
        (run / file).write_text(json.dumps(data))
        return str(run)

    runs = {
        "no list of class names": tampered("t1", "labels.json", lambda d: d.pop("labels")),
        "threshold 'high'": tampered("t2", "labels.json", lambda d: d.update(threshold="high")),
        "mean/std": tampered("t3", "preprocess.json", lambda d: d.update(mean=["x", 0, 0])),
        "interpolation": tampered("t4", "preprocess.json", lambda d: d.update(interpolation="?")),
        "input size": tampered(
            "t5", "preprocess.json", lambda d: d.update(input_size=[3, 9**9, 9])
        ),
        "1000000 classes": tampered(
            "t6", "labels.json", lambda d: d.update(labels=[str(i) for i in range(10**6)])
        ),
    }
    resumable = tmp_path / "resume"
    shutil.copytree(trained_run, resumable)
    (resumable / "checkpoint.pt").write_bytes((trained_run / "model.safetensors").read_bytes()[:10])
    config = json.loads((resumable / "config.json").read_text())
    not_a_folder = tmp_path / "a-file"  # where a folder should be: fails even for root
    not_a_folder.write_text("")
    cases = [
        (("data", tmp_path / "locked.zip"), "password"),
        (("data", tmp_path / "ppmd.zip"), "compression method"),
        (
            (
                "train",
                ROOT / "assets" / "example",
                "--out",
                tmp_path / "w1",
                "--weights",
                tmp_path / "garbage.safetensors",
            ),
            "garbage.safetensors",
        ),
        (
            (
                "train",
                ROOT / "assets" / "example",
                "--out",
                tmp_path / "w2",
                "--weights",
                tmp_path / "code.pth",
            ),
            "code in a weights file is never run",
        ),
        *[(("predict", run, picture), what) for what, run in runs.items()],
        (
            ("train", ROOT / "assets" / "example", "--out", not_a_folder / "run", "--epochs", "1"),
            "cannot read or write",
        ),
    ]
    edits = (("batch_size", 0, "batch size"), ("lr", -1, "learning rate"), ("epochs", "ten", "ten"))

    def one_line_exit_2(args, reason):
        code = main([str(a) for a in args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(err) == 1 and reason in err[0], (args, err)

    for args, reason in cases:
        one_line_exit_2(args, reason)
    for key, value, reason in edits:  # a resumed run's settings are checked like new ones
        (resumable / "config.json").write_text(json.dumps({**config, key: value}))
        one_line_exit_2(("train", ROOT, "--out", resumable, "--resume"), reason)
    os.chdir(tmp_path)  # the default run folder is named after the data: cut to fit
    try:
        assert main(["train", str(long_name), "--epochs", "1"]) == 0
    finally:
        os.chdir(ROOT)
