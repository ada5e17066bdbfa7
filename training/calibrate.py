"""Per-member temperature scaling and split-conformal scores.

Temperatures are fitted on the VALIDATION split, not the calibration split: the conformal
guarantee (coverage >= level in finite samples) holds only if the calibration rows are
exchangeable with future rows *given the fitted model*, i.e. untouched by any fitting step. The
calibration split is therefore used for one thing: the LAC scores of the calibrated ensemble mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from service.uncertainty import conformal_scores, ensemble_mean

#: Search range of log T: temperatures between e^-4 and e^4.
_LOG_T_BOUNDS = (-4.0, 4.0)


@dataclass(frozen=True)
class Calibration:
    """Fitted temperatures [K] and the sorted conformal scores of the calibration split."""

    temperatures: NDArray[np.float32]
    conformal_scores: NDArray[np.float64]


def fit_temperatures(
    logits: NDArray[np.floating], labels: NDArray[np.int64]
) -> NDArray[np.float32]:
    """One temperature per member minimising its NLL on validation rows (search over log T).

    ``logits`` is [N, K, C]. Optimising log T keeps T positive and makes the problem
    well-scaled; the NLL of ``softmax(z / T)`` is unimodal in log T for fixed logits.
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(labels))
    temps = []
    for k in range(z.shape[1]):
        member = z[:, k, :]

        def nll(log_t: float, member: NDArray[np.float64] = member) -> float:
            logp = log_softmax(member / np.exp(log_t), axis=1)
            return float(-logp[rows, labels].mean())

        res = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
        temps.append(float(np.exp(res.x)))
    return np.array(temps, dtype=np.float32)


def member_probabilities(
    logits: NDArray[np.floating], temperatures: NDArray[np.floating]
) -> NDArray[np.float64]:
    """Calibrated member probabilities [N, K, C] from logits [N, K, C] and temperatures [K]."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(temperatures, dtype=np.float64).reshape(1, -1, 1)
    out: NDArray[np.float64] = softmax(z / t, axis=2)
    return out


def calibrate(
    val_logits: NDArray[np.floating],
    val_labels: NDArray[np.int64],
    calib_logits: NDArray[np.floating],
    calib_labels: NDArray[np.int64],
) -> Calibration:
    """Temperatures from validation, then LAC scores of the calibrated mean on calibration rows."""
    temps = fit_temperatures(val_logits, val_labels)
    mean = ensemble_mean(member_probabilities(calib_logits, temps))
    return Calibration(temps, conformal_scores(mean, calib_labels))
