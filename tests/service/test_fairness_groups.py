"""Group naming for fairness slices: value text, training groups, buckets, the size rule."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from service.bundle import OTHER_GROUP
from service.fairness import (
    MIN_GROUP_SIZE,
    MISSING_GROUP,
    group_labels,
    group_text,
    too_small,
    training_groups,
)


def test_values_become_text_as_the_trainer_reads_categories() -> None:
    # Integral numbers lose the fraction (an integer code column with gaps is read as float).
    assert group_text(2.0) == "2"
    assert group_text(2) == "2"
    assert group_text(np.int64(3)) == "3"
    assert group_text(np.float32(2.0)) == "2"
    assert group_text(1.5) == "1.5"
    assert group_text(np.float32(1.5)) == "1.5"
    assert group_text("B") == "B"
    assert group_text(True) == "True"
    assert group_text(np.bool_(False)) == "False"


def test_missing_values_have_no_text() -> None:
    for missing in (None, float("nan"), np.float64("nan"), ""):
        assert group_text(missing) is None


def test_training_groups_are_the_largest_first_without_buckets() -> None:
    values = ["b", "a", "b", None, "c", "a", "b", "other", "", "missing", "other"]
    # Counts: b 3, a 2, c 1; "other" and "missing" are bucket names, None and "" are missing.
    assert training_groups(values) == ["b", "a", "c"]
    assert training_groups(values, limit=2) == ["b", "a"]
    # Equal counts are ordered by text, so the list does not depend on row order.
    assert training_groups(["y", "x", "y", "x"]) == ["x", "y"]
    assert training_groups([2.0, 1.0, 2.0]) == ["2", "1"]


def test_labels_are_bounded_to_the_groups_and_two_buckets() -> None:
    values = ["b", "a", "c", None, "", 2.0, "other", "missing", float("nan")]
    labels = group_labels(values, ["b", "a", "2"])
    assert labels.dtype == object
    assert labels.tolist() == [
        "b",
        "a",
        OTHER_GROUP,  # "c" is not a training group
        MISSING_GROUP,
        MISSING_GROUP,
        "2",
        OTHER_GROUP,
        MISSING_GROUP,
        MISSING_GROUP,
    ]
    assert group_labels([], ["a"]).tolist() == []


def test_a_group_under_the_minimum_size_is_too_small() -> None:
    assert MIN_GROUP_SIZE == 30
    assert too_small(29)
    assert not too_small(30)


def test_the_shared_module_imports_no_pandas_sklearn_or_fairlearn() -> None:
    # The serving image installs none of them; the drift job and the trainer share this module.
    code = (
        "import sys, service.fairness; "
        "print(','.join(m for m in ('pandas', 'sklearn', 'fairlearn', 'scipy') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""
