"""Uncertainty maths shared by training (reports) and serving (responses): numpy only."""

from service.uncertainty.conformal import (
    conformal_scores,
    conformal_threshold,
    prediction_sets,
)
from service.uncertainty.intervals import (
    ensemble_mean,
    logit_intervals,
    student_t_quantile,
)
from service.uncertainty.levels import MAX_CONFIDENCE_LEVEL, MIN_CONFIDENCE_LEVEL

__all__ = [
    "MAX_CONFIDENCE_LEVEL",
    "MIN_CONFIDENCE_LEVEL",
    "conformal_scores",
    "conformal_threshold",
    "ensemble_mean",
    "logit_intervals",
    "prediction_sets",
    "student_t_quantile",
]
