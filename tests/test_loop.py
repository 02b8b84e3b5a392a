"""The public training loop (studio.training.loop): the parts other kinds of runs build on."""

from __future__ import annotations

import torch

from studio.models.freeze import apply_freeze, optimizer_groups, parse_freeze
from studio.training.config import TrainConfig
from studio.training.loop import (
    make_feeder,
    make_optimizer,
    make_scheduler,
    make_task_loss,
    set_up,
    train_epoch,
    validate,
    without_events,
)


def _one_epoch(small_example, tmp_path, cache=True, **hooks):
    cfg = TrainConfig(data=str(small_example), out=str(tmp_path), augment="none", batch_size=8,
                      cache=cache)  # fmt: skip
    run = set_up(cfg)
    frozen = parse_freeze(cfg.freeze, run.groups)
    apply_freeze(run.model, run.groups, frozen)
    feeder = without_events(make_feeder(run, frozen, tmp_path / "cache"))
    optimizer = make_optimizer(cfg, optimizer_groups(run.model, run.groups, 1e-2, 0.0, 1.0))
    steps = feeder.steps_per_epoch()
    scheduler = make_scheduler(cfg, optimizer, steps, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    loss_fn = make_task_loss(False, 0.0)
    events = list(
        _drain(train_epoch(run, feeder, loss_fn, optimizer, scheduler, scaler, 1, None, **hooks))
    )
    val = validate(run, feeder)
    feeder.close()
    return run.model.get_classifier().weight.detach().clone(), events, val, steps


def _drain(gen):
    result = yield from gen
    assert result[2] > 0  # pictures seen


def test_an_extra_loss_term_and_a_second_stream_reach_every_step(small_example, tmp_path):
    plain, events, val, steps = _one_epoch(small_example, tmp_path / "a")
    assert [e.n for e in events] == list(range(1, steps + 1)) and val[0] is not None
    seen = []

    def nothing(step):  # a term of zero leaves the training exactly as it was
        seen.append((step.n, step.extra, tuple(step.logits.shape)))
        return 0 * step.logits.sum()

    same, *_ = _one_epoch(small_example, tmp_path / "b", extra_loss=nothing,
                          extra_batches=iter(["u1", "u2"]))  # fmt: skip
    assert torch.equal(same, plain)
    assert [n for n, *_ in seen] == list(range(1, steps + 1))
    assert [extra for _, extra, _ in seen] == ["u1", "u2"] + [None] * (steps - 2)

    def push_class_0(step):  # a real term changes what is learnt
        return -step.logits[:, 0].mean()

    pushed, *_ = _one_epoch(small_example, tmp_path / "c", extra_loss=push_class_0)
    assert not torch.allclose(pushed, plain)
    assert pushed[0].norm() > plain[0].norm()


def test_each_step_knows_which_training_pictures_it_holds(small_example, tmp_path):
    """A teacher's cached answers are looked up by position: the positions must be the step's
    own pictures, whether the batches are decoded pictures or stored frozen features."""
    from studio.data.dataset import load_dataset

    train = load_dataset(str(small_example)).train  # split as the runs below split it
    targets = torch.tensor([s.labels[0] for s in train])
    for cache in (True, False):
        seen = []

        def check(step, seen=seen):
            assert torch.equal(step.y.cpu(), targets[step.indices])
            seen.extend(step.indices.tolist())
            return 0 * step.logits.sum()

        _one_epoch(small_example, tmp_path / f"c{cache}", cache, extra_loss=check)
        assert sorted(seen) == list(range(len(train))), cache  # each picture once
        assert seen != sorted(seen)  # in the epoch's shuffled order
