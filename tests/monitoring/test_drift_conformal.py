"""Conformal sets against feedback: hand-computed coverage, recalibration and publication."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.drift.conformal import (
    conformal_figures,
    labelled_rows,
    recalibrated_scores,
    set_figures,
)
from service.bundle import Manifest, read_adapted_conformal, read_manifest
from service.bundle.manifest import REFERENCE_PROBABILITY_PREFIX as P
from tests.monitoring.conftest import write_test_bundle

#: Five logged rows: the probability of the first class "a"; the second, "b", has 1 - it and
#: the third none (its LAC score 1 keeps it out of every set below).
PROBABILITY_A = [0.9, 0.6, 0.3, 0.8, 0.55]
TRUTH = ["a", "b", "b", None, "a"]  # row 3 has no label yet


def window(manifest: Manifest, version: int = 1) -> pd.DataFrame:
    a, b, c = manifest.classes
    p = np.array(PROBABILITY_A)
    return pd.DataFrame(
        {
            "logged_at": [5.0, 1.0, 2.0, 3.0, 4.0],  # out of order on purpose
            "version": [version, version, version, version, 99],
            "confidence_level": [0.5] * 5,
            f"{P}{a}": p,
            f"{P}{b}": 1 - p,
            f"{P}{c}": 0.0,
            "true_label": pd.Series([a if t == "a" else b if t == "b" else None for t in TRUTH]),
        }
    )


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, Manifest]:
    path = write_test_bundle(tmp_path / "models")
    manifest = read_manifest(path)
    assert len(manifest.classes) == 3
    return path, manifest


def test_labelled_rows_of_the_version_oldest_first(bundle: tuple[Path, Manifest]) -> None:
    _, manifest = bundle
    probabilities, truth, levels = labelled_rows(window(manifest), manifest, 1)
    # Rows 1, 2, 0 by time (row 3 unlabelled, row 4 another version): p(a) 0.6, 0.3, 0.9.
    assert probabilities[:, 0].tolist() == [0.6, 0.3, 0.9]
    assert truth.tolist() == [1, 1, 0]
    assert levels.tolist() == [0.5, 0.5, 0.5]


def test_recalibrated_scores_are_the_newest_rows_lac_scores_sorted() -> None:
    probabilities = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    truth = np.array([1, 1, 0])
    # LAC = 1 - p(true): 0.6, 0.3, 0.1 -> the newest two (rows 1, 2): 0.3, 0.1 -> sorted.
    assert recalibrated_scores(probabilities, truth, 2) == pytest.approx([0.1, 0.3])
    assert recalibrated_scores(probabilities, truth, 10) == pytest.approx([0.1, 0.3, 0.6])


def test_set_figures_hand_computed() -> None:
    probabilities = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    truth = np.array([1, 1, 0])
    levels = np.array([0.5, 0.5, 0.5])
    # Scores [0.2, 0.5, 0.8], level 0.5: rank ceil(4 * 0.5) = 2 -> threshold 0.5. Sets hold
    # classes with 1 - p <= 0.5, plus the argmax: {0} (0.4 <= 0.5 and argmax), {1}, {0}.
    # Covered: row 0 truth 1 no, row 1 yes, row 2 yes -> 2/3; sizes 1, 1, 1.
    coverage, size = set_figures(probabilities, truth, levels, np.array([0.2, 0.5, 0.8]))
    assert coverage == pytest.approx(2 / 3) and size == 1.0
    # Threshold 0.8 (level 0.75: rank 3): 1 - 0.4 = 0.6 joins row 0's set and 1 - 0.3 = 0.7
    # row 1's; row 2's other class has 1 - 0.1 = 0.9 > 0.8. Sizes 2, 2, 1; all covered.
    at_75 = np.full(3, 0.75)
    coverage, size = set_figures(probabilities, truth, at_75, np.array([0.2, 0.5, 0.8]))
    assert coverage == 1.0 and size == pytest.approx(5 / 3)
    assert set_figures(probabilities[:0], truth[:0], levels[:0], np.array([0.5])) == (None, None)


def test_adaptation_off_publishes_nothing_and_on_publishes_growing_revisions(
    bundle: tuple[Path, Manifest],
) -> None:
    path, manifest = bundle
    frame = window(manifest)
    figures = conformal_figures(frame, manifest, 1, path, adapt=False, window_rows=500, min_rows=20)
    assert figures.labelled_rows == 3 and figures.published_revision is None
    assert figures.adapted_revision is None and figures.adapted_coverage is None
    assert read_adapted_conformal(path, manifest.name, 1) is None
    # On, but fewer labelled rows than the minimum: still nothing.
    figures = conformal_figures(frame, manifest, 1, path, adapt=True, window_rows=500, min_rows=4)
    assert figures.published_revision is None
    figures = conformal_figures(frame, manifest, 1, path, adapt=True, window_rows=2, min_rows=3)
    assert figures.published_revision == 1
    published = read_adapted_conformal(path, manifest.name, 1)
    assert published is not None and published.revision == 1
    assert published.scores == pytest.approx([0.1, 0.3]) and published.window_rows == 2
    # The next run measures the sets of revision 1 and publishes revision 2.
    figures = conformal_figures(frame, manifest, 1, path, adapt=True, window_rows=2, min_rows=3)
    assert (figures.adapted_revision, figures.published_revision) == (1, 2)
    # Revision 1's scores [0.1, 0.3] at level 0.5: rank 2 -> threshold 0.3: sets {0}, {1}, {0}
    # for rows p(a) = 0.6, 0.3, 0.9 with truths b, b, a -> 2/3 covered, size 1.
    assert figures.adapted_coverage == pytest.approx(2 / 3)
    assert figures.adapted_mean_set_size == 1.0
