"""Uncertainty maths shared by training (reports) and serving (responses): numpy only."""

from service.uncertainty.calibration import (
    ECE_BINS,
    ReliabilityBins,
    expected_calibration_error,
    reliability_bins,
)
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
from service.uncertainty.served import Served, served

__all__ = [
    "ECE_BINS",
    "MAX_CONFIDENCE_LEVEL",
    "MIN_CONFIDENCE_LEVEL",
    "ReliabilityBins",
    "Served",
    "conformal_scores",
    "conformal_threshold",
    "ensemble_mean",
    "expected_calibration_error",
    "logit_intervals",
    "prediction_sets",
    "reliability_bins",
    "served",
    "student_t_quantile",
]
