"""Shared fixtures: small real image sets made from the example data and scikit-image photos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# No test may touch the network: the hub check and timm downloads are switched off.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STUDIO_OFFLINE", "1")
# Compression tests check what is timed, not how fast: 5 timed calls per model, not 20.
os.environ.setdefault("STUDIO_TIMED_CALLS", "5")

from studio.data.example import example_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path_factory.getbasetemp() / "studio-cache"))
    # Features shared between runs (studio.training.feature_memo): each test starts without
    # any, so one test's training does not skip the caching another test looks at.
    monkeypatch.setenv("STUDIO_FEATURE_MEMO", str(tmp_path / "feature-memo"))


@pytest.fixture(scope="session")
def example() -> Path:
    return example_dataset()


@pytest.fixture(scope="session")
def small_example(tmp_path_factory, example) -> Path:
    """The example dataset cut to 12 images a class: enough to learn, quick to train."""
    dest = tmp_path_factory.mktemp("small") / "data"
    for folder in sorted(p for p in example.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:12]:
            shutil.copy(image, dest / folder.name / image.name)
    return dest


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_example) -> Path:
    """One finished run shared by the predict, evaluate and export tests."""
    from studio.training.train import TrainConfig, run_training

    out = tmp_path_factory.mktemp("runs") / "shared"
    run_training(
        TrainConfig(data=str(small_example), out=str(out), epochs=3, augment="none", batch_size=8)
    )
    return out
