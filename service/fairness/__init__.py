"""Fairness slices shared by the trainer's model card and the drift job: numpy only.

Group naming (:mod:`.groups`), per-group metrics in Fairlearn's ``MetricFrame`` form
(:mod:`.metrics`), percentile bootstrap intervals (:mod:`.bootstrap`) and between-group
disparities (:mod:`.disparity`). No pandas, scikit-learn or Fairlearn here: the serving image
stays small.
"""

from service.fairness.bootstrap import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES, bootstrap_interval
from service.fairness.disparity import (
    Disparity,
    between_groups,
    demographic_parity,
    equalized_odds,
)
from service.fairness.groups import (
    MIN_GROUP_SIZE,
    MISSING_GROUP,
    RESERVED_GROUPS,
    group_labels,
    group_text,
    too_small,
    training_groups,
)
from service.fairness.metrics import (
    POSITIVE_CLASS,
    MetricFunction,
    accuracy,
    conformal_coverage,
    ece,
    false_positive_rate,
    mean_interval_width,
    mean_set_size,
    per_row,
    selection_rate_for,
    true_positive_rate,
)

__all__ = [
    "BOOTSTRAP_LEVEL",
    "BOOTSTRAP_RESAMPLES",
    "MIN_GROUP_SIZE",
    "MISSING_GROUP",
    "POSITIVE_CLASS",
    "RESERVED_GROUPS",
    "Disparity",
    "MetricFunction",
    "accuracy",
    "between_groups",
    "bootstrap_interval",
    "conformal_coverage",
    "demographic_parity",
    "ece",
    "equalized_odds",
    "false_positive_rate",
    "group_labels",
    "group_text",
    "mean_interval_width",
    "mean_set_size",
    "per_row",
    "selection_rate_for",
    "too_small",
    "training_groups",
    "true_positive_rate",
]
