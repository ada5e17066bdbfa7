"""The one-pass parser of all-numeric native bodies against the general path.

``decode_predict_body`` takes msgspec's typed parse for a model whose features are all numeric.
It must accept exactly what ``decode_predict_request(load_json(body))`` accepts, with the same
arrays and level, and leave every refusal (and its wording) to that path. A hand-computed body
pins the values; a corpus of edge cases and a Hypothesis run compare the two paths.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.bundle import (
    Calibration,
    CategoricalFeature,
    Manifest,
    NumericFeature,
    VerificationSample,
)
from service.codecs.columns import load_json
from service.codecs.numeric_body import parse_numeric_body
from service.codecs.records import decode_predict_body, decode_predict_request
from service.errors import InvalidInput
from service.types import InferenceRequest

NAMES = ("mean radius", "x\u00e9", "z")


def _manifest(names: tuple[str, ...] = NAMES) -> Manifest:
    return Manifest(
        name="numeric",
        created_at=datetime.now(UTC),
        target="y",
        features=[NumericFeature(name=n, mean=0.0, std=1.0) for n in names],
        classes=["a", "b"],
        members=2,
        calibration=Calibration(temperatures=[1.0, 1.0], conformal_scores=[0.1, 0.5]),
        metrics={"accuracy": 0.5},
        model_sha256="0" * 64,
        data_fingerprint="test",
        sample=VerificationSample(
            inputs={n: [0.0] for n in names}, outputs=[[[0.5, 0.5]], [[0.5, 0.5]]]
        ),
    )


MANIFEST = _manifest()


def _general(body: bytes) -> InferenceRequest:
    return decode_predict_request(load_json(body), MANIFEST, max_rows=4, default_level=0.9)


def _fast(body: bytes) -> InferenceRequest:
    return decode_predict_body(body, MANIFEST, max_rows=4, default_level=0.9)


def _same_outcome(body: bytes) -> str:
    """Both paths on ``body``: equal requests or equal refusals; which of the two it was."""
    try:
        expected = _general(body)
    except InvalidInput as error:
        refusal: dict[str, Any] | None = error.to_dict()
    else:
        refusal = None
    if refusal is not None:
        with pytest.raises(InvalidInput) as raised:
            _fast(body)
        assert raised.value.to_dict() == refusal
        return "refused"
    got = _fast(body)
    assert got.confidence_level == expected.confidence_level
    assert got.batch.rows == expected.batch.rows
    assert got.batch.numeric_names == expected.batch.numeric_names
    assert got.batch.numeric_block is not None and expected.batch.numeric_block is not None
    assert got.batch.numeric_block.dtype == np.float32
    assert got.batch.numeric_block.flags.c_contiguous
    np.testing.assert_array_equal(got.batch.numeric_block, expected.batch.numeric_block)
    assert list(got.batch.columns) == list(expected.batch.columns)
    for name, column in expected.batch.columns.items():
        np.testing.assert_array_equal(got.batch.columns[name], column)
        assert got.batch.columns[name].shape == column.shape
    assert got.context is None and expected.context is None
    return "accepted"


def test_a_hand_computed_body() -> None:
    body = (
        b'{"instances": [{"mean radius": 1, "x\\u00e9": null, "z": -2.5},'
        b' {"z": 1e3, "mean radius": -0.0, "x\xc3\xa9": 3}], "confidence_level": 0.8}'
    )
    parsed = parse_numeric_body(body, NAMES)
    assert parsed is not None
    wide, level = parsed
    assert wide.dtype == np.float64
    np.testing.assert_array_equal(wide, [[1.0, math.nan, -2.5], [-0.0, 3.0, 1000.0]])
    assert level == 0.8
    request = _fast(body)
    assert request.confidence_level == 0.8
    # [F, N] float32, one row per feature; each column a [N, 1] view of that row.
    np.testing.assert_array_equal(
        request.batch.numeric_block, np.array([[1, -0.0], [math.nan, 3], [-2.5, 1000]], "f4")
    )
    np.testing.assert_array_equal(request.batch.columns["z"], [[-2.5], [1000.0]])
    assert request.batch.columns["z"].base is not None  # a view, not a copy


def test_no_level_takes_the_default() -> None:
    parsed = parse_numeric_body(
        b'{"instances": [{"mean radius": 1, "x\\u00e9": 2, "z": 3}]}', NAMES
    )
    assert parsed is not None and parsed[1] is None
    body = b'{"instances": [{"mean radius": 1, "x\\u00e9": 2, "z": 3}]}'
    assert _fast(body).confidence_level == 0.9


ROW = '"mean radius": 1, "x\\u00e9": 2, "z": 3'
# Each left to the general path by the parser (None), whatever that path then decides.
REFUSED_BY_PARSER = [
    b"{}",
    b"[]",
    b'{"instances": []}',
    b'{"instances": [{"mean radius": 1, "x\\u00e9": 2}]}',  # a feature missing
    b'{"instances": [{' + ROW.encode() + b', "w": 1}]}',  # an unknown feature
    b'{"instances": [{' + ROW.encode() + b', "context": {"g": "a"}}]}',
    b'{"instances": [{"mean radius": true, "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{"mean radius": "1", "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{"mean radius": [1], "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{"mean radius": NaN, "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{"mean radius": 1e400, "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{' + ROW.encode() + b"}], " + b'"confidence_level": null}',
    b'{"instances": [{' + ROW.encode() + b"}], " + b'"confidence_level": true}',
    b'{"instances": [{' + ROW.encode() + b"}], " + b'"other": 1}',
    b'{"instances": [{' + ROW.encode() + b"}]} trailing",
    b'{"instances": {"mean radius": 1}}',
    b"",
    b"\xff\xfe",
]


@pytest.mark.parametrize("body", REFUSED_BY_PARSER)
def test_the_parser_leaves_these_to_the_general_path(body: bytes) -> None:
    assert parse_numeric_body(body, NAMES) is None
    _same_outcome(body)


EDGE_BODIES = [
    # duplicate keys: the last value wins, in both parsers
    b'{"instances": [{"mean radius": 1, "mean radius": 7, "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{' + ROW.encode() + b'}], "instances": [{"mean radius": 5, "x\\u00e9": 6, '
    b'"z": 7}]}',
    # integers past 64 bits (the stdlib fallback parses those) and past float32's range
    b'{"instances": [{"mean radius": 100000000000000000000000000000000, "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{"mean radius": 1e39, "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{"mean radius": 3.4028235e38, "x\\u00e9": 2, "z": 3}]}',
    b'{"instances": [{"mean radius": 1e-400, "x\\u00e9": -0, "z": 12345678901234567890}]}',
    # levels: an integer, out of range, at the bounds
    b'{"instances": [{' + ROW.encode() + b'}], "confidence_level": 1}',
    b'{"instances": [{' + ROW.encode() + b'}], "confidence_level": 0.5}',
    b'{"instances": [{' + ROW.encode() + b'}], "confidence_level": 100000000000000000000000}',
    # more rows than the limit (4)
    b'{"instances": [' + b", ".join([b"{" + ROW.encode() + b"}"] * 5) + b"]}",
    b'{"instances": [' + b", ".join([b"{" + ROW.encode() + b"}"] * 4) + b"]}",
    b' \n{"instances":[{' + ROW.encode() + b"}]}\n ",
    *REFUSED_BY_PARSER,
]


@pytest.mark.parametrize("body", EDGE_BODIES)
def test_edge_bodies_decode_as_the_general_path_decodes_them(body: bytes) -> None:
    _same_outcome(body)


def test_a_model_with_a_categorical_feature_never_takes_the_parser() -> None:
    manifest = _manifest()
    manifest.features[2] = CategoricalFeature(name="z", categories=["3", "4"])
    manifest = Manifest.model_validate(manifest.model_dump())  # fresh cached properties
    body = b'{"instances": [{"mean radius": 1, "x\\u00e9": 2, "z": 3}]}'
    request = decode_predict_body(body, manifest, max_rows=4, default_level=0.9)
    # The general path's categorical rule: the integer 3 becomes the category text "3".
    assert request.batch.columns["z"].dtype == object
    assert request.batch.columns["z"].tolist() == [["3"]]


VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(width=32)
    | st.text(max_size=3)
    | st.lists(st.integers(), max_size=2)
)
KEYS = st.sampled_from([*NAMES, "context", "w", ""])


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    instances=st.lists(
        st.dictionaries(KEYS, VALUES, min_size=2, max_size=4)
        | st.fixed_dictionaries({n: VALUES for n in NAMES}),
        max_size=5,
    ),
    level=st.none() | VALUES,
)
def test_any_body_decodes_as_the_general_path_decodes_it(
    instances: list[dict[str, Any]], level: Any
) -> None:
    payload: dict[str, Any] = {"instances": instances}
    if level is not None:
        payload["confidence_level"] = level
    # The stdlib writer, as tritonclient's: NaN and Infinity literals and big integers.
    _same_outcome(json.dumps(payload).encode())
    try:
        body = orjson.dumps(payload)
    except TypeError:  # an integer orjson cannot write
        return
    _same_outcome(body)
