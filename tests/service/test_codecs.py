"""Unit tests of the payload codecs: every bad-input rule, against a real bundle manifest."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.bundle import Manifest, read_manifest
from service.codecs.records import decode_predict_request, encode_predict_response
from service.codecs.v2 import decode_infer_request, encode_infer_response
from service.errors import InvalidInput
from service.types import FeatureBatch, InferenceRequest, ModelHandle, Prediction
from tests.service.predictions import prediction_of


@pytest.fixture
def manifest(bundle_repository: Path) -> Manifest:
    return read_manifest(bundle_repository / "toy" / "1")


def _native(manifest: Manifest, payload: Any, max_rows: int = 10) -> Any:
    request = decode_predict_request(payload, manifest, max_rows=max_rows, default_level=0.9)
    return request.batch, request.confidence_level


ROW = {"x1": 1.5, "x2": 3, "colour": "red"}


def test_native_decodes_columns_in_graph_order(manifest: Manifest) -> None:
    payload = {"instances": [ROW, {"colour": None, "x2": None, "x1": -2}]}
    batch, level = _native(manifest, payload)
    assert level == 0.9
    assert batch.rows == 2
    assert list(batch.columns) == ["x1", "x2", "colour"]
    x1 = batch.columns["x1"]
    assert x1.dtype == np.float32
    assert x1.shape == (2, 1)
    assert x1[:, 0].tolist() == [1.5, -2.0]
    assert math.isnan(float(batch.columns["x2"][1, 0]))
    assert batch.columns["colour"][:, 0].tolist() == ["red", ""]


def test_native_integer_category_becomes_text(manifest: Manifest) -> None:
    batch, _ = _native(manifest, {"instances": [{**ROW, "colour": 7}]})
    assert batch.columns["colour"][0, 0] == "7"


def test_native_confidence_level(manifest: Manifest) -> None:
    _, level = _native(manifest, {"instances": [ROW], "confidence_level": 0.8})
    assert level == 0.8


@pytest.mark.parametrize(
    ("payload", "expect"),
    [
        ({"instances": [ROW, {"x1": 1, "x2": 2}]}, {"instance": 1, "feature": "colour"}),
        ({"instances": [{**ROW, "size": 3}]}, {"instance": 0, "feature": "size"}),
        (
            {"instances": [{"x1": 1, "x2": 2, "color": "red"}]},
            {"instance": 0, "feature": "colour"},
        ),
        ({"instances": [ROW, {**ROW, "x1": "1.5"}]}, {"instance": 1, "feature": "x1"}),
        ({"instances": [{**ROW, "x2": True}]}, {"instance": 0, "feature": "x2"}),
        ({"instances": [{**ROW, "x2": [1]}]}, {"instance": 0, "feature": "x2"}),
        ({"instances": [ROW, ROW, {**ROW, "x1": 1e39}]}, {"instance": 2, "feature": "x1"}),
        # The second numeric feature of a later row: the row/feature mapping of the 2-D path.
        ({"instances": [ROW, {**ROW, "x2": "3"}]}, {"instance": 1, "feature": "x2"}),
        ({"instances": [ROW, ROW, {**ROW, "x2": -1e39}]}, {"instance": 2, "feature": "x2"}),
        ({"instances": [{**ROW, "x1": 10**400}]}, {"instance": 0, "feature": "x1"}),
        ({"instances": [{**ROW, "colour": 1.0}]}, {"instance": 0, "feature": "colour"}),
        ({"instances": [{**ROW, "colour": False}]}, {"instance": 0, "feature": "colour"}),
        ({"instances": [ROW, "row"]}, {"instance": 1}),
        ({"instances": []}, {"field": "instances"}),
        ({"instances": [ROW] * 11}, {"field": "instances", "limit": 10}),
        ({"instances": {"x1": 1}}, {"field": "instances"}),
        ({"rows": [ROW]}, {"field": "rows"}),
        ({"instances": [ROW], "confidence_level": 0.3}, {"field": "confidence_level"}),
        ({"instances": [ROW], "confidence_level": 1.0}, {"field": "confidence_level"}),
        ({"instances": [ROW], "confidence_level": "0.9"}, {"field": "confidence_level"}),
        ({"instances": [ROW], "confidence_level": True}, {"field": "confidence_level"}),
    ],
)
def test_native_bad_input_names_instance_and_feature(
    manifest: Manifest, payload: Any, expect: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput) as info:
        _native(manifest, payload)
    body = info.value.to_dict()
    assert info.value.status_code == 400
    for key, value in expect.items():
        assert body[key] == value, body
    if "feature" in expect:
        assert repr(expect["feature"]) in body["error"]
    if "instance" in expect:
        assert f"instance {expect['instance']}" in body["error"]


def test_native_infinity_is_refused_with_expectation(manifest: Manifest) -> None:
    with pytest.raises(InvalidInput) as info:
        _native(manifest, {"instances": [{**ROW, "x1": 1e39}]})
    assert "float32" in info.value.to_dict()["expected"]


def _v2(manifest: Manifest, payload: dict[str, Any], binary: bytes = b"") -> Any:
    import orjson

    header = orjson.dumps(payload)
    return decode_infer_request(
        header + binary,
        str(len(header)) if binary else None,
        manifest,
        max_rows=10,
        default_level=0.95,
    )


def _inputs(n: int = 2) -> list[dict[str, Any]]:
    return [
        {"name": "x2", "datatype": "INT64", "shape": [n, 1], "data": [[4]] * n},
        {"name": "x1", "datatype": "FP32", "shape": [n], "data": [0.5] * n},
        {"name": "colour", "datatype": "BYTES", "shape": [n], "data": ["blue", None][:n]},
    ]


def test_v2_json_inputs_nested_any_order(manifest: Manifest) -> None:
    req = _v2(manifest, {"id": "abc", "inputs": _inputs(), "parameters": {"confidence_level": 0.7}})
    assert req.request_id == "abc"
    assert req.confidence_level == 0.7
    assert list(req.batch.columns) == ["x1", "x2", "colour"]
    assert req.batch.columns["x2"][:, 0].tolist() == [4.0, 4.0]
    assert req.batch.columns["colour"][:, 0].tolist() == ["blue", ""]
    assert [name for name, _ in req.outputs] == [
        "probabilities",
        "lower",
        "upper",
        "label",
        "prediction_set",
    ]


def test_v2_binary_inputs_nan_is_missing(manifest: Manifest) -> None:
    x1 = np.array([np.nan, 2.0], dtype=np.float32).tobytes()
    x2 = np.array([1.0, 2.0], dtype=np.float64).tobytes()
    colour = b"".join(struct.pack("<I", len(s)) + s for s in (b"red", b""))
    inputs = [
        {"name": "x1", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}},
        {"name": "x2", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}},
        {
            "name": "colour",
            "datatype": "BYTES",
            "shape": [2],
            "parameters": {"binary_data_size": len(colour)},
        },
    ]
    req = _v2(manifest, {"inputs": inputs, "outputs": [{"name": "label"}]}, x1 + x2 + colour)
    assert math.isnan(float(req.batch.columns["x1"][0, 0]))
    assert req.batch.columns["x2"][:, 0].tolist() == [1.0, 2.0]
    assert req.batch.columns["colour"][:, 0].tolist() == ["red", ""]
    assert req.outputs == (("label", False),)


def _with(index: int, **change: Any) -> list[dict[str, Any]]:
    inputs = _inputs()
    inputs[index] = {**inputs[index], **change}
    return inputs


@pytest.mark.parametrize(
    ("payload", "feature"),
    [
        ({"inputs": _inputs()[:2]}, "colour"),
        ({"inputs": [*_inputs(), {"name": "size", "datatype": "FP32", "shape": [2]}]}, "size"),
        ({"inputs": [*_inputs(), _inputs()[0]]}, "x2"),
        ({"inputs": _with(1, datatype="BYTES")}, "x1"),
        ({"inputs": _with(2, datatype="FP32")}, "colour"),
        ({"inputs": _with(1, shape=[2, 2])}, "x1"),
        ({"inputs": _with(1, shape=[3])}, "x1"),
        ({"inputs": _with(1, data=[1.0])}, "x1"),
        ({"inputs": _with(1, data=["a", 1.0])}, "x1"),
        ({"inputs": _with(1, shape=[0], data=[])}, "x1"),
        # Equal (==) to the first input's [2, 1], yet not a shape of ints: still refused.
        ({"inputs": _with(1, shape=[2.0, 1])}, "x1"),
        ({"inputs": _with(2, shape=[2, True])}, "colour"),
        ({"inputs": _with(2, shape=[True, 1])}, "colour"),
        ({"inputs": _with(1, shape=[11], data=[1.0] * 11)}, "x1"),
        ({"inputs": _inputs(), "outputs": [{"name": "logits"}]}, None),
        ({"inputs": _inputs(), "parameters": {"confidence_level": 0.9999}}, None),
    ],
)
def test_v2_bad_input(manifest: Manifest, payload: dict[str, Any], feature: str | None) -> None:
    with pytest.raises(InvalidInput) as info:
        _v2(manifest, payload)
    if feature is not None:
        assert info.value.to_dict()["feature"] == feature
        assert repr(feature) in info.value.message


def test_v2_inputs_of_one_shape_decode_to_their_rows(manifest: Manifest) -> None:
    inputs = [{**tensor, "shape": [2, 1]} for tensor in _inputs()]
    inputs[1]["data"] = [0.5, 1.5]
    req = _v2(manifest, {"inputs": inputs})
    assert req.batch.rows == 2
    assert req.batch.columns["x1"][:, 0].tolist() == [0.5, 1.5]
    assert req.batch.columns["colour"][:, 0].tolist() == ["blue", ""]


def _uniform(n: int = 2) -> list[dict[str, Any]]:
    """One JSON tensor per feature, all of shape [n], nothing else: the decoder's bulk path."""
    return [
        {"name": "colour", "datatype": "BYTES", "shape": [n], "data": ["blue", None, "red"][:n]},
        {"name": "x2", "datatype": "INT64", "shape": [n], "data": [4, None, 7][:n]},
        {"name": "x1", "datatype": "FP64", "shape": [n], "data": [0.5, 1e-3, -2.0][:n]},
    ]


@pytest.mark.parametrize("n", [1, 3])
def test_v2_bulk_path_decodes_as_the_per_input_path(manifest: Manifest, n: int) -> None:
    bulk = _v2(manifest, {"inputs": _uniform(n)})
    # An empty parameters object on each tensor sends the same request down the per-input path.
    each = _v2(manifest, {"inputs": [{**t, "parameters": {}} for t in _uniform(n)]})
    assert bulk.batch.rows == each.batch.rows == n
    assert list(bulk.batch.columns) == list(each.batch.columns) == ["x1", "x2", "colour"]
    for name, column in bulk.batch.columns.items():
        other = each.batch.columns[name]
        assert column.dtype == other.dtype and column.shape == other.shape == (n, 1)
        if column.dtype == object:
            assert column[:, 0].tolist() == other[:, 0].tolist()
        else:
            assert np.array_equal(column, other, equal_nan=True)
    if n == 3:  # null is a missing value: NaN for a number, "" for a category
        assert np.isnan(bulk.batch.columns["x2"][1, 0])
        assert bulk.batch.columns["colour"][:, 0].tolist() == ["blue", "", "red"]


@pytest.mark.parametrize(
    ("index", "value", "feature", "expected"),
    [(2, "a", "x1", "null"), (1, 1e39, "x2", "float32"), (0, 3.5, "colour", "string")],
)
def test_v2_bulk_path_names_a_bad_element(
    manifest: Manifest, index: int, value: Any, feature: str, expected: str
) -> None:
    inputs = _uniform(3)
    inputs[index]["data"][1] = value
    with pytest.raises(InvalidInput) as info:
        _v2(manifest, {"inputs": inputs})
    assert info.value.to_dict()["feature"] == feature
    assert "element 1" in info.value.message and expected in info.value.message


@pytest.mark.parametrize(("value", "expected"), [("a", "null"), (1e39, "float32")])
def test_v2_json_bad_element_names_element_and_feature(
    manifest: Manifest, value: Any, expected: str
) -> None:
    # x1 is the second numeric tensor the client sends: the one-pass conversion of every JSON
    # tensor must still point at the right tensor and element.
    with pytest.raises(InvalidInput) as info:
        _v2(manifest, {"inputs": _with(1, data=[0.5, value])})
    body = info.value.to_dict()
    assert body["feature"] == "x1"
    assert body["instance"] == 1
    assert "element 1" in body["error"]
    assert expected in body["expected"]


def test_v2_binary_infinity_names_element(manifest: Manifest) -> None:
    x1 = np.array([1.0, np.inf], dtype=np.float32).tobytes()
    inputs = _with(1, data=None, parameters={"binary_data_size": 8})
    del inputs[1]["data"]
    with pytest.raises(InvalidInput) as info:
        _v2(manifest, {"inputs": inputs}, x1)
    body = info.value.to_dict()
    assert (body["instance"], body["feature"]) == (1, "x1")


def test_v2_malformed_json(manifest: Manifest) -> None:
    with pytest.raises(InvalidInput, match="malformed JSON"):
        decode_infer_request(b"{nope", None, manifest, max_rows=10, default_level=0.95)


def _result(manifest: Manifest, request: InferenceRequest | None = None) -> Prediction:
    handle = ModelHandle(name="toy", version=1, manifest=manifest, provider="CPUExecutionProvider")
    p = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    batch = request.batch if request is not None else FeatureBatch({}, 2)
    return prediction_of(
        handle,
        batch,
        p,
        lower=p - 0.05,
        upper=p + 0.05,
        prediction_sets=np.array([[False, True, False], [True, True, True]]),
        request=request,
    )


def test_native_encoder_shape(manifest: Manifest) -> None:
    body = encode_predict_response(_result(manifest))
    assert body["model"] == "toy"
    assert body["version"] == 1
    assert body["request_id"] == "rid"
    first = body["predictions"][0]
    assert first["label"] == "yes"
    assert first["probabilities"] == {"no": 0.2, "yes": 0.7, "maybe": 0.1}
    assert first["intervals"]["yes"] == pytest.approx([0.65, 0.75])
    assert first["prediction_set"] == ["yes"]
    assert body["predictions"][1]["prediction_set"] == ["no", "yes", "maybe"]
    # [lower, upper] per class, every row and class (p -+ 0.05 by hand)
    assert body["predictions"][1]["intervals"] == {
        "no": pytest.approx([0.45, 0.55]),
        "yes": pytest.approx([0.2, 0.3]),
        "maybe": pytest.approx([0.2, 0.3]),
    }


def test_v2_encoder_binary_and_json(manifest: Manifest) -> None:
    import orjson

    req = _v2(
        manifest,
        {
            "inputs": _inputs(),
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities"},
            ],
        },
    )
    body, header_length = encode_infer_response(_result(manifest, req))
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert header["id"] == "rid"
    label, probs = header["outputs"]
    assert label["parameters"]["binary_data_size"] == len(body) - header_length
    assert body[header_length:] == b"\x03\x00\x00\x00yes\x02\x00\x00\x00no"
    assert probs["shape"] == [2, 3]
    assert probs["data"] == pytest.approx([0.2, 0.7, 0.1, 0.5, 0.25, 0.25])


@pytest.mark.parametrize("level", [0.0, 0.49, 0.9991, 1.0, float("nan")])
def test_a_confidence_level_outside_the_range_is_refused_by_both_codecs(
    manifest: Manifest, level: float
) -> None:
    # The codecs are the one place the level is checked: the pipeline trusts what they decoded.
    with pytest.raises(InvalidInput, match="confidence_level"):
        _native(manifest, {"instances": [ROW], "confidence_level": level})
    if level == level:  # JSON has no NaN: a V2 body cannot carry one
        with pytest.raises(InvalidInput, match="confidence_level"):
            _v2(manifest, {"inputs": _inputs(), "parameters": {"confidence_level": level}})


@pytest.mark.parametrize("width", [3, 8, 9, 12])
def test_prediction_sets_in_class_order_by_table_and_beyond(width: int) -> None:
    from service.codecs.records import _prediction_sets

    classes = [f"c{k}" for k in range(width)]
    members = np.zeros((4, width), dtype=bool)
    members[0, [0, 2]] = True  # {c0, c2}
    members[2, :] = True  # every class
    members[3, width - 1] = True  # the last class alone (the highest bit of the table)
    expected = [["c0", "c2"], [], classes, [f"c{width - 1}"]]
    assert _prediction_sets(members, classes) == expected
    # Past the row threshold, where up to 8 classes take the table.
    assert _prediction_sets(np.tile(members, (3, 1)), classes) == expected * 3
