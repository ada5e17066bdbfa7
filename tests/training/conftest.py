"""Training fixtures: tiny data files and bundles trained once per session.

Training is kept small (few epochs, small data) so the whole training suite stays within a few
minutes on two cores; the full-size targets live in ``make bench-train``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from tests.training.helpers import CliOutcome
from training.data import synthetic_frame
from training.pipeline import TrainConfig, TrainResult, train


@pytest.fixture
def probserve(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliOutcome]:
    """Run the real console-script function ``service.cli.main`` with the given arguments."""

    def run(*args: str) -> CliOutcome:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliOutcome(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def mixed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV with numeric and categorical columns, missing values and a string target."""
    frame, target, _ = synthetic_frame(1500, seed=7)
    rng = np.random.default_rng(7)
    frame = frame.copy()
    frame.loc[rng.random(len(frame)) < 0.1, "x1"] = np.nan
    colour = frame["colour"].astype(object)
    colour[rng.random(len(frame)) < 0.1] = None
    frame["colour"] = colour
    frame["flag"] = rng.random(len(frame)) < 0.5
    frame["outcome"] = target
    path = tmp_path_factory.mktemp("csv") / "mixed data.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def breast_cancer_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """breast_cancer with the default architecture and members (its targets are checked); 8 rows
    explained for the importance section (64 added 3.7-10 s on two shared cores)."""
    repo = tmp_path_factory.mktemp("bc_repo")
    return train(
        TrainConfig(data="breast_cancer", model_repository=repo, progress=False, importance_rows=8)
    )


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """digits with the default settings but 2 rows explained (64 features, 10 classes: 64 rows
    added about 11 s on two shared cores)."""
    repo = tmp_path_factory.mktemp("digits_repo")
    return train(
        TrainConfig(data="digits", model_repository=repo, progress=False, importance_rows=2)
    )


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A small synthetic problem whose true probabilities are known."""
    repo = tmp_path_factory.mktemp("synthetic_repo")
    return train(
        TrainConfig(
            data="synthetic", synthetic_rows=4000, model_repository=repo, progress=False, epochs=60
        )
    )
