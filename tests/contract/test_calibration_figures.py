"""The one ECE (model card and drift job): right-closed bins pinned with rows on bin edges."""

from __future__ import annotations

import numpy as np
import pytest

from service.uncertainty import ECE_BINS, expected_calibration_error, reliability_bins

#: Four rows, two classes, four bins (edges 0.25, 0.5, 0.75, 1.0: exact in binary).
#: Top confidence and correctness: 0.5 right (a tie: argmax is the first class), 0.75 wrong,
#: 1.0 right, 0.6 right.
P = np.array([[0.5, 0.5], [0.25, 0.75], [0.0, 1.0], [0.4, 0.6]])
Y = np.array([0, 0, 1, 1])


def test_rows_on_bin_edges_fall_in_the_bin_below_and_one_in_the_last() -> None:
    # Right-closed bins (0, .25], (.25, .5], (.5, .75], (.75, 1]: 0.5 -> bin 1, 0.75 and 0.6 ->
    # bin 2, 1.0 -> bin 3. (Taking bins with floor would move 0.5 to bin 2 and 0.75 to bin 3.)
    bins = reliability_bins(P, Y, 4)
    assert bins.count.tolist() == [0, 1, 2, 1]
    assert bins.confidence.tolist() == pytest.approx([0.0, 0.5, 0.675, 1.0])
    assert bins.accuracy.tolist() == pytest.approx([0.0, 1.0, 0.5, 1.0])


def test_ece_hand_computed_on_bin_edges() -> None:
    # Bin 1: |1 - 0.5| * 1 row; bin 2: |0.5 - 0.675| * 2 rows; bin 3: |1 - 1| * 1 row.
    # ECE = (0.5 + 0.35 + 0) / 4 = 0.2125 (floor bins would give (0.9 + 0.75) / 4 = 0.4125).
    assert expected_calibration_error(P, Y, 4) == pytest.approx(0.2125)


def test_default_bins_put_an_edge_value_below_it_and_one_in_the_last_bin() -> None:
    assert ECE_BINS == 15
    # 0.6 is 9/15, an edge: it belongs to bin 8, (8/15, 9/15]; 1.0 to bin 14.
    bins = reliability_bins(np.array([[0.4, 0.6], [0.0, 1.0]]), np.array([1, 0]))
    assert np.flatnonzero(bins.count).tolist() == [8, 14]
    # Bin 8: right at 0.6 -> gap 0.4; bin 14: wrong at 1.0 -> gap 1.0. ECE = 1.4 / 2.
    assert expected_calibration_error(np.array([[0.4, 0.6], [0.0, 1.0]]), np.array([1, 0])) == (
        pytest.approx(0.7)
    )


def test_no_rows_is_an_error_not_a_nan() -> None:
    with pytest.raises(ValueError, match="no rows"):
        expected_calibration_error(np.empty((0, 2)), np.empty(0, dtype=np.int64))
