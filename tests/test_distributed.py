"""Several processes through torchrun (DDP, gloo on this CPU): same run folder, results within a
small tolerance of one process, a killed worker ends the run with a message, and it resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from studio.training.distributed import Ranks, epoch_order, lost_peer, share_of, sum_all
from studio.training.torchrun import StopFileFlag
from studio.training.train import TrainConfig, run_training

ROOT = Path(__file__).resolve().parent.parent
# Epochs of a linear head on cached features: a fraction of a second each.
SGD = ["--preset", "custom", "--head-solver", "sgd", "--augment", "none", "--batch-size", "16"]


def studio_process(*args) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STUDIO_OFFLINE": "1"}
    command = [sys.executable, "-m", "studio", *map(str, args)]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def wait_for(check, what: str, timeout: float = 600) -> None:
    """Poll until ``check()``; the runs below cannot end by themselves, so this never races."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.5)


def epochs_done(run: Path) -> int:
    history = run / "history.csv"
    return max(0, len(history.read_text().splitlines()) - 1) if history.exists() else 0


def worker_pid(rank: int) -> int | None:
    """The process ``studio train --devices`` started as ``rank`` (torchrun sets RANK)."""
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(e.startswith(b"STUDIO_STOP_FILE=") for e in env):
            return int(proc.name)
    return None


def test_shares_cover_every_picture_once_and_flags_agree(tmp_path):
    # Each process's epoch: a DistributedSampler order; together they cover all the pictures,
    # padded to equal length, and the order changes with the epoch's seed.
    orders = [epoch_order(11, 5, Ranks(r, 2)) for r in range(2)]
    assert [len(o) for o in orders] == [6, 6]
    assert set(orders[0]) | set(orders[1]) == set(range(11))
    assert list(epoch_order(11, 6, Ranks(0, 2))) != list(orders[0])
    assert share_of(range(7), Ranks(1, 3)) == [1, 4]
    assert Ranks(0, 2).share(32) == 16 and Ranks().share(32) == 32
    assert sum_all([1.5, 2.0], Ranks()) == [1.5, 2.0]  # one process: nothing to add
    # The launcher's stop file stops its processes like Ctrl-C does.
    flag = StopFileFlag(threading.Event(), str(tmp_path / "stop"))
    assert not flag.is_set()
    (tmp_path / "stop").touch()
    assert flag.is_set()
    assert lost_peer(RuntimeError("Read error: Connection reset by peer"))
    assert not lost_peer(RuntimeError("shape mismatch"))


def test_two_processes_train_like_one_and_the_app_offers_them_where_there_are_gpus(
    example, tmp_path, monkeypatch
):
    """The Train tab offers a device count only with two GPUs or more (pretended here); its
    job for two devices runs ``studio train --devices 2`` (gloo on this CPU), followed live,
    and makes the run folder one process makes, with results within a test picture."""
    from studio.jobs import TrainingJob
    from studio.training import distributed
    from studio.ui.train_tab import devices_choice

    hidden = devices_choice()  # this computer: no GPU; 1 stays a valid choice (Start sends it)
    assert hidden["visible"] is False and hidden["choices"] == [1]
    monkeypatch.setattr(distributed, "gpu_count", lambda: 2)
    offered = devices_choice()
    assert offered["visible"] is True and offered["choices"] == [1, 2]

    two, one = tmp_path / "two", tmp_path / "one"
    settings = dict(data=str(example), head_solver="sgd", augment="none", batch_size=16,
                    epochs=3)  # fmt: skip
    job = TrainingJob(TrainConfig(out=str(two), **settings), devices=2).start()
    assert job.wait(600)
    assert job.snapshot().state == "finished", job.snapshot()
    kinds = [e.kind for e in job.events]
    assert kinds.count("started") == 1 and "batch" in kinds and kinds[-1] == "finished"
    run_training(TrainConfig(out=str(one), **settings))
    # The same run folder, metrics.json identical in shape, only rank 0's events.
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    m2, m1 = (json.loads((r / "metrics.json").read_text()) for r in (two, one))
    assert m2.keys() == m1.keys() and m2["n"] == m1["n"]
    assert abs(m2["accuracy"] - m1["accuracy"]) <= 1 / m1["n"] + 1e-9
    events = [json.loads(line) for line in (two / "events.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "started" for e in events) == 1
    assert json.loads((two / "run_info.json").read_text())["processes"] == 2
    # Each epoch's validation loss close to one process's (other batches, same data and seed).
    h2, h1 = ((r / "history.csv").read_text().splitlines()[1:] for r in (two, one))
    assert len(h2) == len(h1) == 3
    column = (one / "history.csv").read_text().splitlines()[0].split(",").index("val_loss")
    for a, b in zip(h2, h1, strict=True):
        assert abs(float(a.split(",")[column]) - float(b.split(",")[column])) < 0.05


def test_a_killed_worker_ends_the_run_with_a_message_and_it_resumes(example, tmp_path):
    run = tmp_path / "run"
    args = ["train", example, "--out", run, "--devices", 2, "--patience", 0, *SGD]
    # Far more epochs than the test waits for: the run cannot end before it is killed.
    first = studio_process(*args, "--epochs", 100_000)
    wait_for(lambda: epochs_done(run) >= 2, "two finished epochs")
    pid = worker_pid(1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    code, _, err = finish(first)
    assert code == 1 and "Traceback" not in err
    assert "training process 1 was ended by signal SIGKILL" in err
    assert f"--out {run} --resume --devices 2" in err
    assert (run / "checkpoint.pt").exists() and not (run / "metrics.json").exists()
    killed_at = epochs_done(run)

    resumed = studio_process("train", example, "--out", run, "--resume", "--devices", 2)
    wait_for(lambda: epochs_done(run) >= killed_at + 2, "two more epochs after the resume")
    resumed.send_signal(signal.SIGINT)  # Ctrl-C: every process stops after the same batch
    code, out, err = finish(resumed)
    assert code == 0, err
    assert "stopped: stopped by user" in out and "Traceback" not in err
    history = (run / "history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in history] == list(range(1, len(history) + 1))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9
    assert (run / "checkpoint.pt").exists()  # a stopped run can go on


@pytest.mark.parametrize("devices", ["0", "x"])
def test_bad_device_count_is_refused(devices, tmp_path):
    from studio.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", str(tmp_path), "--devices", devices])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_the_several_machines_command_works_as_two_machines_on_one_computer(example, tmp_path):
    """Slow (~20 s): the README's command for several machines (torchrun --nnodes with c10d
    rendezvous), each "machine" a torchrun of its own meeting at 127.0.0.1: one run folder
    written by whichever became rank 0, two processes, the frozen features shared."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STUDIO_OFFLINE": "1",
           "STUDIO_FEATURE_MEMO": str(tmp_path / "memo")}  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
               f"127.0.0.1:{port}", "--rdzv-id", "two-machines", "-m", "studio", "train",
               str(example), "--out", str(run), *SGD, "--epochs", "3"]  # fmt: skip
    machines = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    results = [finish(machine) for machine in machines]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    said = [out for _, out, _ in results if "model and report:" in out]
    assert len(said) == 1  # rank 0 alone speaks and writes
    assert "computed once and cached" in said[0]
    assert json.loads((run / "run_info.json").read_text())["processes"] == 2
    assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 0.9
    assert any((tmp_path / "memo").rglob("*.npy"))  # the features were computed, not found


@pytest.mark.slow
def test_the_apps_stop_ends_a_two_process_run_cleanly(example, tmp_path):
    """Slow (~25 s): Stop on a run of two processes (the app's job for two GPUs, here on the
    CPU) reaches both through the launcher; the run ends as stopped, keeps its best epoch and
    can go on. Far more epochs than the test waits for: it cannot end first."""
    from studio.jobs import TrainingJob
    from studio.runs import can_resume

    run = tmp_path / "run"
    settings = dict(data=str(example), head_solver="sgd", augment="none", batch_size=16,
                    epochs=100_000, patience=0)  # fmt: skip
    job = TrainingJob(TrainConfig(out=str(run), **settings), devices=2).start()
    wait_for(lambda: len(job.snapshot().epochs) >= 2 or job.done, "two epochs in the app's job")
    assert not job.done, job.snapshot().message
    job.stop()
    assert job.wait(300)
    snap = job.snapshot()
    assert snap.state == "stopped" and "stopped by user" in snap.message, snap.message
    assert (run / "metrics.json").is_file() and can_resume(run)
    assert worker_pid(0) is None and worker_pid(1) is None  # no process left behind
