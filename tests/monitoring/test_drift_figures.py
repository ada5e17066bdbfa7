"""Model-health figures pinned with hand-computed cases and against the trainer's ECE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# The drift job's and the trainer's ECE are the names their modules import: that binding is
# what the identity test checks, so it is read from there rather than from service.uncertainty.
from monitoring.drift.figures import (  # type: ignore[attr-defined]
    ambiguous_share,
    estimated_accuracy,
    expected_calibration_error,
    feedback_figures,
    finite_mean,
)
from service import uncertainty
from training import metrics


def test_ece_hand_computed() -> None:
    # Bin of 0.9 (rows 0, 1): confidence .9, accuracy .5 -> gap .4, weight 2/4.
    # Bin of 0.6 (rows 2, 3): confidence .6, accuracy 1 -> gap .4, weight 2/4. ECE = .4
    p = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(p, labels) == pytest.approx(0.4)


def test_the_drift_job_and_the_model_card_share_one_ece() -> None:
    # One definition (service.uncertainty.calibration), so the two figures cannot disagree.
    assert expected_calibration_error is uncertainty.expected_calibration_error
    trainer_ece = metrics.expected_calibration_error  # type: ignore[attr-defined]
    assert trainer_ece is uncertainty.expected_calibration_error


def test_estimated_accuracy_is_mean_top_probability() -> None:
    assert estimated_accuracy(np.array([[0.7, 0.3], [0.2, 0.8]])) == pytest.approx(0.75)


def test_feedback_figures_count_only_labelled_rows() -> None:
    predicted = pd.Series(["a", "b", "a", "b"])
    truth = pd.Series(["a", None, "b", "zzz"], dtype=object)  # unknown label counts as wrong
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = feedback_figures(predicted, truth, p, ["a", "b"], min_labelled_rows=3)
    assert out.labelled_rows == 3
    assert out.realized_accuracy == pytest.approx(1 / 3)
    assert out.expected_calibration_error is not None


def test_means_skip_missing_and_none_when_empty() -> None:
    assert finite_mean(pd.Series([1.0, np.nan, 3.0])) == pytest.approx(2.0)
    assert finite_mean(pd.Series([np.nan])) is None
    assert ambiguous_share(pd.Series([1, 2, 3, 1])) == pytest.approx(0.5)
    assert ambiguous_share(pd.Series([], dtype=float)) is None
