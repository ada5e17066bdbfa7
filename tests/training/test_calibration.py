"""The calibration step on its own: the mean's NLL, the mean's temperature, separable splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import softmax

from training.calibrate import (
    calibrate,
    fit_mean_temperature,
    fit_member_temperatures,
    mean_nll,
    member_probabilities,
)


def _sample_labels(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(softmax(logits, axis=1), axis=1)
    labels: np.ndarray = (rng.random(len(logits))[:, None] > cumulative).sum(axis=1)
    return labels.astype(np.int64)


def test_mean_nll_is_the_nll_of_the_averaged_probabilities() -> None:
    # Member 0: logits (0, ln 3) -> (1/4, 3/4); member 1: (0, 0) -> (1/2, 1/2).
    logits = np.array([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    label = np.array([1])
    assert mean_nll(logits, label, np.array([1.0, 1.0])) == pytest.approx(-math.log(0.625))
    # T = 2 on member 0: logits (0, ln 3 / 2) -> p1 = sqrt(3) / (1 + sqrt(3)).
    p1 = math.sqrt(3.0) / (1.0 + math.sqrt(3.0))
    expected = -math.log((p1 + 0.5) / 2)
    assert mean_nll(logits, label, np.array([2.0, 1.0])) == pytest.approx(expected)
    # Not the mean of the members' NLLs (that is what schema 1 minimised member by member).
    assert expected != pytest.approx((-math.log(p1) - math.log(0.5)) / 2)


def test_mean_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0, 3, size=(5000, 3))
    labels = _sample_labels(rng, base / 2.0)
    # Three identical members: their mean is each of them, generated at T = 2.
    logits = np.repeat(base[:, None, :], 3, axis=1)
    assert fit_mean_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)


def test_members_calibrated_one_by_one_make_an_underconfident_mean() -> None:
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        truth = rng.normal(0, 3, size=(n, 3))
        labels = _sample_labels(rng, truth)
        return truth[:, None, :] + rng.normal(0, 2.0, size=(n, 4, 3)), labels

    fit_logits, fit_labels = draw(5000)
    new_logits, new_labels = draw(5000)

    def estimate_error(temperatures: np.ndarray) -> float:
        mean = member_probabilities(new_logits, temperatures).mean(axis=1)
        realised = float(np.mean(mean.argmax(axis=1) == new_labels))
        return float(np.mean(mean.max(axis=1))) - realised

    member_temperatures = fit_member_temperatures(fit_logits, fit_labels)
    member = estimate_error(member_temperatures)
    shared = np.full(4, fit_mean_temperature(fit_logits, fit_labels))
    # Each member alone is calibrated, their average is far too flat (about -0.14 here)...
    assert member < -0.10
    # ...while the temperature fitted for the mean more than halves the gap.
    assert abs(estimate_error(shared)) < abs(member) / 2
    assert mean_nll(new_logits, new_labels, shared) < mean_nll(
        new_logits, new_labels, member_temperatures
    )


def _separable() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, size=(40, 2, 2))
    logits[:, 1] = logits[:, 0] * 1.5
    labels = (logits[:, 0, 1] > logits[:, 0, 0]).astype(np.int64)
    return logits, labels


def test_a_split_the_members_separate_has_no_maximum_likelihood_temperature() -> None:
    # Every row right: the NLL falls all the way to the search bound e^-4 (schema 1's 0.02).
    logits, labels = _separable()
    np.testing.assert_allclose(fit_member_temperatures(logits, labels), math.exp(-4), rtol=1e-3)
    assert fit_mean_temperature(logits, labels, prior_sd=1e6) == pytest.approx(math.exp(-4), 1e-3)


def test_the_prior_gives_a_separable_split_the_map_temperature() -> None:
    logits, labels = _separable()
    n = len(labels)
    # The MAP objective written out independently, minimised on a fine grid of log T.

    def objective(log_t: float) -> float:
        p = softmax(logits / math.exp(log_t), axis=2).mean(axis=1)
        return float(-np.mean(np.log(p[np.arange(n), labels]))) + log_t**2 / (2 * n)

    coarse = np.linspace(-4, 4, 801)
    start = coarse[int(np.argmin([objective(a) for a in coarse]))]
    fine = np.linspace(start - 0.01, start + 0.01, 201)
    best = fine[int(np.argmin([objective(a) for a in fine]))]
    fitted = fit_mean_temperature(logits, labels)
    assert math.log(fitted) == pytest.approx(best, abs=1e-3)
    assert fitted > 5 * math.exp(-4)  # away from the bound


def test_calibrate_stores_the_served_means_scores_of_the_calibration_rows() -> None:
    rng = np.random.default_rng(4)
    val = rng.normal(0, 2, size=(200, 3, 2))
    val_labels = _sample_labels(rng, val.mean(axis=1) / 1.5)
    calib = np.array([[[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 3.0], [1.0, 0.0]]])
    result = calibrate(val, val_labels, calib, np.array([0, 1]))
    t = float(result.temperatures[0])
    np.testing.assert_array_equal(result.temperatures, np.full(3, t, dtype=np.float32))
    assert t == pytest.approx(fit_mean_temperature(val, val_labels), rel=1e-6)

    def p_first(a: float) -> float:  # softmax((a, 0) / T)[0]
        return 1.0 / (1.0 + math.exp(-a / t))

    row0 = 1 - (p_first(2.0) + p_first(1.0) + 0.5) / 3  # true class 0
    row1 = 1 - ((1 - p_first(-1.0)) + (1 - p_first(-3.0)) + (1 - p_first(1.0))) / 3  # class 1
    np.testing.assert_allclose(result.conformal_scores, sorted([row0, row1]), rtol=1e-6)
    np.testing.assert_allclose(
        result.member_temperatures, fit_member_temperatures(val, val_labels), rtol=1e-6
    )
