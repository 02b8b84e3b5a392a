"""Which backbone to start from: LogME against hand computations, then the ranking of the
offline backbones on the example, the trade-off rule, the CLI and the Model tab's handler."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from helpers import assert_one_line_error
from scipy.stats import multivariate_normal

from studio.cli import main
from studio.transfer.logme import evidence, logme
from studio.transfer.rank import BackboneScore, best_tradeoff, rank_backbones

LITE = "tf_efficientnet_lite0,tf_efficientnet_lite1"


@pytest.mark.parametrize("n, d", [(6, 3), (4, 7)])  # fewer features than pictures, and more
def test_the_evidence_is_the_gaussian_density_it_stands_for(n, d):
    """y = F w + noise with w ~ N(0, I/alpha), noise ~ N(0, I/beta) makes y ~ N(0, I/beta +
    F F^T/alpha): the evidence must be that density, whatever alpha and beta."""
    rng = np.random.default_rng(n)
    f, y = rng.normal(size=(n, d)), rng.normal(size=n)
    for alpha, beta in [(1.0, 1.0), (0.3, 2.5), (4.0, 0.2)]:
        density = multivariate_normal(np.zeros(n), np.eye(n) / beta + f @ f.T / alpha)
        assert evidence(f, y, alpha, beta) == pytest.approx(density.logpdf(y), abs=1e-9)


def test_logme_is_the_evidence_maximised_by_hand_on_a_tiny_problem():
    """Two features, five pictures, two classes: the maximum found by searching a fine grid
    of alpha and beta by hand, per class, averaged per picture."""
    f = np.array([[1.0, 0.2], [0.9, -0.1], [0.1, 1.0], [-0.2, 0.8], [1.1, 0.3]])
    labels = np.array([0, 0, 1, 1, 0])
    grid = np.exp(np.linspace(math.log(1e-3), math.log(1e3), 400))
    by_hand = []
    for k in (0, 1):
        y = (labels == k).astype(float)
        coarse = max((evidence(f, y, a, b), a, b) for a in grid[::8] for b in grid[::8])
        _, a0, b0 = coarse  # then a finer grid around the coarse maximum
        fine = a0 * np.exp(np.linspace(-0.3, 0.3, 61)), b0 * np.exp(np.linspace(-0.3, 0.3, 61))
        by_hand.append(max(evidence(f, y, a, b) for a in fine[0] for b in fine[1]) / len(y))
    assert logme(f, labels) == pytest.approx(np.mean(by_hand), abs=1e-4)
    assert logme(f, labels) >= np.mean(by_hand) - 1e-9  # the fixed point is the maximum


def test_features_that_carry_the_labels_score_higher_than_noise():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    noise = rng.normal(size=(120, 64))
    informative = noise.copy()
    informative[:, :3] += 3.0 * np.eye(3)[labels]
    assert logme(informative, labels) > logme(noise, labels) + 0.1
    # More features than pictures, separable classes: finite (no overflow as beta grows).
    wide = np.abs(rng.normal(size=(30, 500))) + 5.0 * np.eye(3)[labels[::4]].repeat(167, 1)[:, :500]
    assert math.isfinite(logme(wide, labels[::4]))
    multi = np.eye(3)[labels] + np.eye(3)[(labels + 1) % 3]  # two tags a picture
    assert math.isfinite(logme(informative, multi))


def _score(name, logme_, probe, ms):
    return BackboneScore(name, name, logme_, probe, 1.0, ms, 5.0, 50)


def test_the_trade_off_prefers_quality_then_a_much_faster_near_equal():
    best, near_fast, near_slow, worse_fast = (
        _score("best", 1.0, 0.90, 60.0),
        _score("near-fast", 0.9, 0.89, 30.0),
        _score("near-slow", 0.95, 0.885, 50.0),
        _score("worse-fast", 0.5, 0.80, 5.0),
    )
    assert best_tradeoff([best, near_fast, near_slow, worse_fast]).backbone == "near-fast"
    assert best_tradeoff([best, near_slow, worse_fast]).backbone == "best"  # not 1.5x faster
    multi = [_score("a", 1.0, None, 60.0), _score("b", 0.2, None, 10.0)]
    assert best_tradeoff(multi).backbone == "b"  # no probe: all are candidates


def test_the_offline_backbones_are_ranked_on_the_example(small_example):
    scores = rank_backbones(small_example, LITE.split(","))
    assert [s.logme for s in scores] == sorted((s.logme for s in scores), reverse=True)
    assert {s.backbone for s in scores} == set(LITE.split(","))
    for s in scores:
        assert 0.0 <= s.probe_accuracy <= 1.0 and s.pictures == 24  # the training split
        assert s.seconds > 0 and s.ms_per_image > 0 and s.params_m > 4
    assert best_tradeoff(scores).backbone in LITE


def test_the_rank_command_prints_json_and_refuses_what_it_cannot_rank(
    small_example, tmp_path, capsys
):
    argv = ["rank", str(small_example), "--backbones", LITE, "--max-pictures", "12", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["backbone"] for row in out] != [] and len(out) == 2
    for row in out:
        assert {"backbone", "logme", "probe_accuracy", "seconds"} <= set(row)
        assert row["pictures"] == 12  # four a class: the classes take turns
    assert out[0]["logme"] >= out[1]["logme"]
    assert main(["rank", str(small_example), "--backbones", "tf_efficientnet_lite0"]) == 0
    assert "<- best trade-off" in capsys.readouterr().out
    cases = [
        ([small_example, "--backbones", "nosuch"], "unknown backbone 'nosuch'"),
        ([small_example, "--backbones", "resnet50"], "no pretrained weights here"),
        ([tmp_path / "missing"], "does not exist"),
    ]
    for args, message in cases:
        assert_one_line_error(capsys, ["rank", *args], message)


def test_the_model_tabs_ranking_grows_then_chooses(small_example, tmp_path):
    import shutil

    from studio.ui.common import Context
    from studio.ui.rank_panel import rank

    ctx = Context(tmp_path / "app")
    _, ws = ctx.open(None)
    shutil.rmtree(ws.data_dir)
    shutil.copytree(small_example, ws.data_dir)
    steps = list(rank(ctx, ws.id, progress=lambda *a, **k: None))
    sizes = [len(table) for table, _, _ in steps]
    assert sizes == list(range(1, len(steps))) + [len(steps) - 1]  # one more each time
    table, said, choice = steps[-1]
    chosen = [row[0] for row in table if row[0].endswith("← chosen")]
    assert len(chosen) == 1 and said.startswith(f"**Chosen: {chosen[0].removesuffix(' ← chosen')}")
    assert choice["value"].startswith("tf_efficientnet_lite")


def test_training_the_ranked_backbone_reuses_what_the_ranking_computed(small_example, tmp_path):
    from studio import events as ev
    from studio.data.facts import facts_of
    from studio.models.backbones import weights_info
    from studio.training.feature_memo import FeatureMemo
    from studio.training.train import TrainConfig, train

    def caching(out):
        events = list(train(TrainConfig(data=str(small_example), out=str(out), epochs=2,
                                        augment="none")))  # fmt: skip
        said = [e.message for e in events if isinstance(e, ev.Notice)]
        return max(e.of for e in events if isinstance(e, ev.Caching)), said, events[-1]

    alone, said, _ = caching(tmp_path / "before")  # 24 training + 6 validation pictures
    assert alone == 30 and not any("already seen" in s for s in said)
    memo = next(p for p in (tmp_path / "feature-memo").iterdir())  # that run kept its features
    shutil.rmtree(memo)
    rank_backbones(small_example, ["tf_efficientnet_lite0"])
    after, said, finished = caching(tmp_path / "after")
    assert after == 6  # only the validation pictures, which the ranking does not look at
    assert any(s.startswith("24 picture(s) already seen by this backbone") for s in said)
    assert finished.kind == "finished" and finished.metrics["accuracy"] > 0.8

    # A memo that does not hold this backbone's features is found out and left alone.
    model_memo = [p for p in (tmp_path / "feature-memo").iterdir()]
    assert len(model_memo) == 1
    for entry in model_memo[0].rglob("*.npy"):
        np.save(entry, np.zeros(1280, np.float32))
    again, said, _ = caching(tmp_path / "again")
    assert again == 30 and not any("already seen" in s for s in said)
    picture = next(small_example.rglob("*.jpg"))
    kept = FeatureMemo("tf_efficientnet_lite0", weights_info("tf_efficientnet_lite0"),
                       {}).get_many([facts_of(picture).sha1])  # fmt: skip
    assert kept == {}  # another preprocessing is another memo


def test_pretraining_shows_in_the_score(small_example):
    """The same backbone with its ImageNet weights fits the example's labels better than with
    random ones: the score sees what pretraining brings."""
    from studio.data.dataset import load_dataset
    from studio.transfer.rank import score_backbone

    dataset = load_dataset(small_example)
    real = score_backbone("tf_efficientnet_lite0", dataset, dataset.train)
    random = score_backbone("tf_efficientnet_lite0", dataset, dataset.train, pretrained=False)
    assert real.logme > random.logme
    assert real.probe_accuracy >= random.probe_accuracy


def test_a_stopped_ranking_keeps_what_it_scored(small_example):
    asked = []
    scores = rank_backbones(small_example, LITE.split(","),
                            progress=lambda done, total, name: asked.append((done, total, name)),
                            stop=lambda: True)  # fmt: skip
    assert len(scores) == 1 and asked == [(1, 2, "tf_efficientnet_lite0")]
