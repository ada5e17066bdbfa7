"""Can held-out labels fit a scale on the members' spread so intervals cover P(y|x) at their level?

``python bench/interval_scale_study.py 3000 20000`` trains the default ensemble (8 members) on the
project's synthetic generator, whose true P(y | x) is known, and prints for each size:

- the label-based estimate of the ensemble mean's squared error, from the Brier decomposition on
  the held-out rows (validation + calibration): ``mean(Brier_i - sum_c p_c (1 - p_c)) / 2``;
- the squared error the members' spread implies (delta method: ``(p (1 - p) sd_logit)^2``);
- the oracle scale (true squared error on the test split over the implied one), which a label-based
  fit would have to find;
- coverage of the true probability and mean width on the test split, unscaled and at the oracle
  scale, at 0.95 and 0.90.

Why the label-based fit cannot work: per row, ``(y - p)^2 - p (1 - p) = (y - p)(1 - 2p)`` for a
binary label, and a calibrated mean has ``E[y | p] = p``, so the estimate's expectation is 0
whatever the estimation error: labels identify miscalibration, not how far p is from P(y | x).
The figures below measure it (negative estimates at both sizes).

``--paired`` tries a label-free scale instead: members 2j and 2j+1 share one bootstrap resample
and differ only in initialisation, so half their squared difference estimates the initialisation
noise V_init, which averages out in the mean of K members; the scale is
``sqrt((V_total - V_init (1 - 1/K)) / V_total)`` on the held-out rows, with V_total the members'
logit variance. It measures variance only, not bias. Results: bench/results/interval-scale.md.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from numpy.typing import NDArray

from service.uncertainty import student_t_quantile
from training import ensemble
from training.calibrate import calibrate, member_probabilities
from training.data import load_dataset
from training.ensemble import fit_ensemble, member_logits
from training.pipeline import TrainConfig
from training.preprocess import encode_features, fit_features
from training.splits import SplitSizes, stratified_splits


def _logit_spread(members: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p = np.clip(members, 1e-7, 1 - 1e-7)
    logits = np.log(p) - np.log1p(-p)
    return logits.mean(axis=1), logits.std(axis=1, ddof=1)


def coverage(
    members: NDArray[np.float64], truth: NDArray[np.float64], level: float, scale: float
) -> tuple[float, float]:
    """Share of rows whose every class interval holds the true probability; mean width."""
    centre, spread = _logit_spread(members)
    half = student_t_quantile(level, members.shape[1]) * scale * spread
    mean = members.mean(axis=1)
    lower = np.minimum(1 / (1 + np.exp(-(centre - half))), mean)
    upper = np.maximum(1 / (1 + np.exp(-(centre + half))), mean)
    held = ((truth >= lower) & (truth <= upper)).all(axis=1)
    return float(held.mean()), float((upper - lower).mean())


def squared_errors(members: NDArray[np.float64], labels: NDArray[np.int64]) -> tuple[float, float]:
    """(label-based estimate of the mean's squared error, squared error the spread implies)."""
    mean = members.mean(axis=1)
    onehot = np.eye(mean.shape[1])[labels]
    estimate = float((((onehot - mean) ** 2).sum(1) - (mean * (1 - mean)).sum(1)).mean() / 2)
    _, spread = _logit_spread(members)
    implied = float(((mean * (1 - mean) * spread) ** 2).sum(1).mean())
    return estimate, implied


def pair_bootstraps(base_seed: int) -> None:
    """Make members 2j and 2j+1 share member 2j's bootstrap resample (initialisations differ)."""
    original = ensemble._bootstrap

    def paired(rows: int, seed: int) -> torch.Tensor:  # ``seed``: the member's own seed
        member = seed - base_seed * 10_007
        return original(rows, base_seed * 10_007 + member // 2 * 2)

    ensemble._bootstrap = paired


def paired_scale(members: NDArray[np.float64]) -> float:
    """The label-free scale of ``--paired`` from held-out member probabilities [N, K, C]."""
    p = np.clip(members, 1e-7, 1 - 1e-7)
    logits = np.log(p) - np.log1p(-p)
    k = logits.shape[1]
    total = float(logits.var(axis=1, ddof=1).mean())
    pairs = logits.reshape(logits.shape[0], k // 2, 2, logits.shape[2])
    init = float((((pairs[:, :, 0] - pairs[:, :, 1]) ** 2) / 2).mean())
    return float(np.sqrt(max(total - init * (1 - 1 / k), 1e-6) / total))


def study(rows: int, paired: bool) -> None:
    """Train on ``rows`` synthetic rows and print the figures of the module docstring."""
    config = TrainConfig(data="synthetic", synthetic_rows=rows, seed=0)
    data = load_dataset("synthetic", synthetic_rows=rows, seed=0)
    sizes = SplitSizes(config.validation_size, config.calibration_size, config.test_size)
    splits = stratified_splits(data.labels, sizes, config.seed)
    names = ("train", "validation", "calibration", "test")
    part = {s: data.frame.iloc[getattr(splits, s)].reset_index(drop=True) for s in names}
    labels = {s: data.labels[getattr(splits, s)] for s in names}
    features = fit_features(part["train"], data.numeric, data.categorical)
    encoded = {s: encode_features(part[s], features) for s in names}
    trained = fit_ensemble(
        encoded["train"],
        labels["train"],
        encoded["validation"],
        labels["validation"],
        len(data.classes),
        config.ensemble(),
    )
    logits = {s: member_logits(trained.layers, encoded[s]) for s in names[1:]}
    calib = calibrate(
        logits["validation"], labels["validation"], logits["calibration"], labels["calibration"]
    )
    members = {s: member_probabilities(logits[s], calib.temperatures) for s in logits}
    assert data.true_probabilities is not None
    truth = data.true_probabilities[splits.test]
    held = np.concatenate([members["validation"], members["calibration"]])
    held_labels = np.concatenate([labels["validation"], labels["calibration"]])
    estimate, implied = squared_errors(held, held_labels)
    true_error = float(((members["test"].mean(axis=1) - truth) ** 2).sum(1).mean())
    _, implied_test = squared_errors(members["test"], labels["test"])
    oracle = float(np.sqrt(true_error / implied_test))
    scales = [1.0, oracle] + ([paired_scale(held)] if paired else [])
    print(
        f"| {rows} | {len(held_labels)} | {estimate:.5f} | {implied:.5f} | {true_error:.5f} "
        f"| {oracle:.3f} |" + (f" {scales[2]:.3f} |" if paired else ""),
        end="",
    )
    for level in (0.95, 0.90):
        for scale in scales:
            covered, width = coverage(members["test"], truth, level, scale)
            print(f" {covered:.3f} / {width:.3f} |", end="")
    print()


if __name__ == "__main__":
    paired = "--paired" in sys.argv
    sizes = [int(a) for a in sys.argv[1:] if a != "--paired"] or [3000, 20000]
    if paired:
        pair_bootstraps(base_seed=0)
        print(
            "| rows | held-out | label estimate | spread-implied | true (test) | oracle scale "
            "| paired scale | 0.95 unscaled | 0.95 oracle | 0.95 paired | 0.90 unscaled "
            "| 0.90 oracle | 0.90 paired |"
        )
        print("|---" * 13 + "|")
    else:
        print(
            "| rows | held-out | label estimate | spread-implied | true (test) | oracle scale "
            "| 0.95 unscaled | 0.95 oracle | 0.90 unscaled | 0.90 oracle |"
        )
        print("|---" * 10 + "|")
    for rows in sizes:
        study(rows, paired)
