"""Temperature scaling of the ensemble mean and split-conformal scores.

What is served is the MEAN of the member probabilities, so that is what the temperature is fitted
for: one temperature T shared by every member, chosen so that ``mean_k softmax(z_k / T)``
minimises the negative log-likelihood of the validation rows. Schema-1 bundles fitted one
temperature per member for that member's own NLL instead; averaging calibrated members makes an
underconfident mean (the average of disagreeing members is flatter than each of them), which is
why their label-free accuracy estimate ran low (docs/architecture.md, "The model bundle").

The fit is a MAP estimate in log-temperature space with a weak Gaussian prior (sd 1) centred on
T = 1. Without it a validation split the members separate perfectly (breast_cancer: 86 rows, 7 of
8 members without an error) has no finite best temperature: its NLL keeps falling as T -> 0, and
the bounded search stopped anywhere in that flat tail (T = 0.02..0.06, logits scaled 15-50x),
serving near-0/1 probabilities on new rows. With the prior such a split moves T only as far as
its evidence goes; on a split with errors the data outweigh the prior (digits: 1.116 vs 1.119).

Temperatures are fitted on the VALIDATION split, not the calibration split: the conformal
guarantee (coverage >= level in finite samples) holds only if the calibration rows are
exchangeable with future rows *given the fitted model*, i.e. untouched by any fitting step. The
calibration split is therefore used for one thing: the LAC scores of the served (temperature-
scaled) ensemble mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp, softmax

from service.uncertainty import conformal_scores, ensemble_mean

#: Search range of log T: temperatures between e^-4 and e^4 (a guard; the prior decides).
_LOG_T_BOUNDS = (-4.0, 4.0)
#: Standard deviation of the Gaussian prior on log T: T within e^(+-2) = 0.14..7.4 a priori.
LOG_T_PRIOR_SD = 1.0


@dataclass(frozen=True)
class Calibration:
    """The served temperatures [K] and the sorted conformal scores of the calibration split.

    ``member_temperatures`` are the schema-1 per-member fit, kept only so the report can state
    the calibration error of the mean before and after.
    """

    temperatures: NDArray[np.float32]
    conformal_scores: NDArray[np.float64]
    member_temperatures: NDArray[np.float32]


def mean_nll(
    logits: NDArray[np.floating], labels: NDArray[np.int64], temperatures: NDArray[np.floating]
) -> float:
    """NLL of the ensemble mean ``mean_k softmax(z_k / T_k)`` for logits [N, K, C], T [K].

    Computed in log space (log-mean-exp of member log-probabilities), so a confident wrong row
    costs its true finite amount rather than log(0).
    """
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(temperatures, dtype=np.float64).reshape(1, -1, 1)
    member_logp = log_softmax(z / t, axis=2)
    mean_logp = logsumexp(member_logp, axis=1) - np.log(z.shape[1])
    return float(-mean_logp[np.arange(len(labels)), labels].mean())


def fit_mean_temperature(
    logits: NDArray[np.floating], labels: NDArray[np.int64], prior_sd: float = LOG_T_PRIOR_SD
) -> float:
    """One temperature shared by all members, the MAP fit of the mean's NLL (see module doc).

    Minimises ``sum_i nll_i(T) + (log T)^2 / (2 prior_sd^2)`` over log T, which keeps T positive
    and the problem well-scaled.
    """
    z = np.asarray(logits, dtype=np.float64)
    n, members = len(labels), z.shape[1]

    def objective(log_t: float) -> float:
        temps = np.full(members, np.exp(log_t))
        return mean_nll(z, labels, temps) + 0.5 * (log_t / prior_sd) ** 2 / n

    res = minimize_scalar(
        objective, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(res.x))


def fit_member_temperatures(
    logits: NDArray[np.floating], labels: NDArray[np.int64]
) -> NDArray[np.float32]:
    """Schema 1's fit: one temperature per member for its own NLL (kept for the report only)."""
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
    """Mean temperature from validation, then LAC scores of the served mean on calibration rows."""
    members = np.asarray(val_logits).shape[1]
    shared = fit_mean_temperature(val_logits, val_labels)
    # float32 first: the graph stores float32, and the scores must be those of what is served.
    temps = np.full(members, shared, dtype=np.float32)
    mean = ensemble_mean(member_probabilities(calib_logits, temps))
    return Calibration(
        temps,
        conformal_scores(mean, calib_labels),
        fit_member_temperatures(val_logits, val_labels),
    )
