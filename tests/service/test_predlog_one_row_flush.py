"""A flush of 1-row requests: their arrays are joined end to end, not concatenated one by one.

The joined path must give exactly what the concatenating path gives, and fall back to it for
arrays it cannot join (another dtype, a strided view, requests of other row counts).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from service.predlog import PredictionRecord
from service.predlog.arrow_arrays import picked_texts, repeated_texts, texts
from service.predlog.batches import columns_of, prediction_batch

NAN = float("nan")


def one_row(i: int, x: float, y: float, p_a: float, label: str) -> PredictionRecord:
    """Request ``r{i}``: one instance of a two-class model with numeric features x and y
    (handed as the codec's [F, 1] block), intervals p -/+ 0.125, its set {label}."""
    p = np.array([[p_a, 1.0 - p_a]])
    block = np.array([[x], [y]], dtype=np.float32)
    return PredictionRecord(
        logged_at=float(i),
        request_id=f"r{i}",
        model="m",
        version=1,
        protocol="v2",
        classes=["a", "b"],
        features={"x": block[0:1].T, "y": block[1:2].T},
        numeric=(("x", "y"), block),
        probabilities=p,
        lower=p - 0.125,
        upper=p + 0.125,
        prediction_sets=np.array([[label == "a", label == "b"]]),
        labels=[label],
        confidence_level=0.9,
        latency_s=0.5 * i,
    )


def flush() -> list[PredictionRecord]:
    return [
        one_row(1, 1.5, -2.0, 0.75, "a"),
        one_row(2, NAN, 4.0, 0.25, "b"),
        one_row(3, 0.5, NAN, 0.5, "a"),
    ]


def test_a_flush_of_one_row_requests_hand_computed() -> None:
    records = flush()
    batch = prediction_batch(records, columns_of(records[0]))
    assert batch.to_pydict() == {
        "logged_at": [1.0, 2.0, 3.0],
        "request_id": ["r1", "r2", "r3"],
        "instance": [0, 0, 0],
        "protocol": ["v2", "v2", "v2"],
        "label": ["a", "b", "a"],
        "confidence_level": [0.9, 0.9, 0.9],
        "interval_width": [0.25, 0.25, 0.25],  # upper - lower of the label: 2 * 0.125
        "set_size": [1, 1, 1],
        "latency_s": [0.5, 1.0, 1.5],
        "features.x": [1.5, None, 0.5],  # NaN is missing
        "features.y": [-2.0, 4.0, None],
        "probabilities.a": [0.75, 0.25, 0.5],
        "probabilities.b": [0.25, 0.75, 0.5],
        "lower.a": [0.625, 0.125, 0.375],
        "lower.b": [0.125, 0.625, 0.375],
        "upper.a": [0.875, 0.375, 0.625],
        "upper.b": [0.375, 0.875, 0.625],
        "prediction_set.a": [True, False, True],
        "prediction_set.b": [False, True, False],
    }


def test_arrays_that_cannot_be_joined_give_the_same_batch() -> None:
    """A float32 probability row, strided lower and set rows and a float64 feature block each
    send their column down the concatenating path: same values."""
    records = flush()
    columns = columns_of(records[0])
    expected = prediction_batch(records, columns)
    lower = np.array([[0.0, 0.125, 0.0, 0.625]])[:, 1::2]  # a strided [1, 2] view
    flags = np.array([[True, False, False, True]])[:, 1::2]
    assert not lower.flags.c_contiguous and not flags.flags.c_contiguous
    block = np.array([[0.5], [NAN]])  # float64
    odd = [
        dataclasses.replace(records[0], probabilities=np.array([[0.75, 0.25]], np.float32)),
        dataclasses.replace(records[1], lower=lower, prediction_sets=flags),
        dataclasses.replace(records[2], numeric=(("x", "y"), block)),
    ]
    assert prediction_batch(odd, columns).equals(expected)
    # Integers have float64's size, so only their dtype tells them apart: cast, not reinterpreted.
    ints = [dataclasses.replace(records[0], probabilities=np.array([[1, 0]])), *records[1:]]
    cast = prediction_batch(ints, columns)
    assert cast.column("probabilities.a").to_pylist() == [1.0, 0.25, 0.5]


def test_requests_of_zero_and_two_rows_are_not_taken_for_two_one_row_requests() -> None:
    """Two records holding two rows in all: each row still gets its own request's values."""
    two = dataclasses.replace(
        one_row(7, 0.0, 0.0, 0.75, "a"),
        features={},
        numeric=(("x", "y"), np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)),
        probabilities=np.array([[0.75, 0.25], [0.25, 0.75]]),
        lower=np.array([[0.5, 0.0], [0.0, 0.5]]),
        upper=np.array([[1.0, 0.5], [0.5, 1.0]]),
        prediction_sets=np.array([[True, False], [False, True]]),
        labels=["a", "b"],
    )
    empty = dataclasses.replace(
        one_row(6, 0.0, 0.0, 0.75, "a"),
        numeric=(("x", "y"), np.zeros((2, 0), dtype=np.float32)),
        probabilities=np.zeros((0, 2)),
        lower=np.zeros((0, 2)),
        upper=np.zeros((0, 2)),
        prediction_sets=np.zeros((0, 2), dtype=bool),
        labels=[],
    )
    batch = prediction_batch([empty, two], columns_of(one_row(0, 0.0, 0.0, 0.5, "a")))
    assert batch.column("request_id").to_pylist() == ["r7", "r7"]
    assert batch.column("instance").to_pylist() == [0, 1]
    assert batch.column("latency_s").to_pylist() == [3.5, 3.5]
    # The [F, 2] block's rows are features: x = (1, 2), y = (3, 4), not (1, 3) and (2, 4).
    assert batch.column("features.x").to_pylist() == [1.0, 2.0]
    assert batch.column("features.y").to_pylist() == [3.0, 4.0]
    assert batch.column("interval_width").to_pylist() == [0.5, 0.5]


def test_repeated_texts_repeat_each_value_its_count_in_order() -> None:
    array = repeated_texts(["r1", "vé", "r3"], [2, 0, 3])
    array.validate(full=True)
    assert array.to_pylist() == ["r1", "r1", "r3", "r3", "r3"]
    one = repeated_texts(["vé"], [3])  # é is two bytes
    one.validate(full=True)
    assert one.to_pylist() == ["vé", "vé", "vé"]
    assert repeated_texts(["v1"], [0]).to_pylist() == []


def test_ascii_texts_take_their_lengths_from_the_characters() -> None:
    array = texts(["req-10", "", "b"])
    array.validate(full=True)
    assert array.to_pylist() == ["req-10", "", "b"]
    assert array.buffers()[1] is not None
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[: len(array) + 1]
    assert offsets.tolist() == [0, 6, 6, 7]


def test_picked_texts_repeat_each_value_where_the_index_names_it() -> None:
    array = picked_texts(["ab", "", "é\x00"], np.array([2, 0, 0, 1, 2]))
    array.validate(full=True)
    assert array.to_pylist() == ["é\x00", "ab", "ab", "", "é\x00"]  # é is 2 bytes, NUL kept
    same_length = picked_texts(["ab", "cd"], np.array([1, 1, 0]))
    same_length.validate(full=True)
    assert same_length.to_pylist() == ["cd", "cd", "ab"]
    assert picked_texts(["", ""], np.array([1, 0])).to_pylist() == ["", ""]
    assert picked_texts(["ab"], np.array([], dtype=np.intp)).to_pylist() == []
