"""Hostile payloads: text that is not UTF-8, every V2 field of the wrong type, booleans.

Each case is a 400 (InvalidInput) whose message names where the problem is; none may reach the
model (a lone surrogate made ONNX Runtime fail a whole dynamic batch) or raise anything else.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.bundle import CategoricalFeature, Manifest, read_manifest
from service.codecs.columns import load_json
from service.codecs.records import decode_predict_request
from service.codecs.v2 import decode_infer_request
from service.errors import InvalidInput
from tests.service.conftest import InProcessService

ROW = '{"x1": 1.5, "x2": 3, "colour": "red"}'


@pytest.fixture
def manifest(bundle_repository: Path) -> Manifest:
    return read_manifest(bundle_repository / "toy" / "1")


def _native(manifest: Manifest, body: str) -> Any:
    payload = load_json(body.encode())
    return decode_predict_request(payload, manifest, max_rows=10, default_level=0.9)


def _v2(manifest: Manifest, body: str | bytes, binary: bytes = b"") -> Any:
    header = body.encode() if isinstance(body, str) else body
    return decode_infer_request(
        header + binary,
        str(len(header)) if binary else None,
        manifest,
        max_rows=10,
        default_level=0.95,
    )


def _inputs(colour: str = '"blue", null', x1: str = "0.5, 1") -> str:
    return (
        '[{"name": "x1", "datatype": "FP32", "shape": [2], "data": [' + x1 + "]},"
        ' {"name": "x2", "datatype": "FP32", "shape": [2, 1], "data": [[4], [5]]},'
        ' {"name": "colour", "datatype": "BYTES", "shape": [2], "data": [' + colour + "]}]"
    )


# -- text that cannot be UTF-8 ------------------------------------------------------------------
# The JSON escape \ud800 is a lone surrogate: orjson refuses it, the stdlib fallback accepts it.


def test_lone_surrogate_in_a_category_names_instance_and_feature(manifest: Manifest) -> None:
    body = '{"instances": [' + ROW + ', {"x1": 1, "x2": 2, "colour": "re\\ud800d"}]}'
    with pytest.raises(InvalidInput) as info:
        _native(manifest, body)
    error = info.value.to_dict()
    assert (error["instance"], error["feature"]) == (1, "colour")
    assert "instance 1, feature 'colour'" in error["error"]
    assert "UTF-8" in error["expected"]
    orjson.dumps(error)  # the answer itself must be writable


def test_lone_surrogate_next_to_a_nan_literal_is_still_refused(manifest: Manifest) -> None:
    # NaN forces the fallback parser on its own; the surrogate must not ride along.
    body = '{"instances": [{"x1": NaN, "x2": 2, "colour": "\\udfff"}]}'
    with pytest.raises(InvalidInput) as info:
        _native(manifest, body)
    assert info.value.to_dict()["feature"] == "colour"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"instances": [{"x1": 1, "x2": 2, "colour": "red", "\\ud800": 1}]}', "instances[0]"),
        ('{"instances": [' + ROW + '], "\\ud800": 1}', "['\\ud800']"),
    ],
)
def test_lone_surrogate_in_a_native_key_is_refused(
    manifest: Manifest, body: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        _native(manifest, body)
    error = info.value.to_dict()
    assert error["field"].startswith(field)
    orjson.dumps(error)


def test_lone_surrogate_in_a_v2_tensor_names_element_and_input(manifest: Manifest) -> None:
    with pytest.raises(InvalidInput) as info:
        _v2(manifest, '{"inputs": ' + _inputs(colour='"blue", "\\ud800"') + "}")
    error = info.value.to_dict()
    assert (error["instance"], error["feature"]) == (1, "colour")
    assert "element 1" in error["error"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('"id": "abc\\ud800"', "id"),
        ('"parameters": {"\\ud800": 1}', "parameters['\\ud800']"),
        ('"parameters": {"note": "\\ud800"}', "parameters.note"),
        ('"outputs": [{"name": "\\ud800"}]', "outputs[0].name"),
    ],
)
def test_lone_surrogate_in_any_v2_field_is_refused(
    manifest: Manifest, extra: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        _v2(manifest, '{"inputs": ' + _inputs() + ", " + extra + "}")
    error = info.value.to_dict()
    assert error["field"] == field
    assert field in error["error"]
    orjson.dumps(error)


def test_surrogate_bytes_in_a_binary_bytes_tensor_are_refused(manifest: Manifest) -> None:
    # CESU-style bytes for U+D800: not UTF-8, so the strict decoder refuses them too.
    colour = b"".join(struct.pack("<I", len(s)) + s for s in (b"red", b"\xed\xa0\x80"))
    header = (
        '{"inputs": [{"name": "x1", "datatype": "FP32", "shape": [2], "data": [1, 2]},'
        ' {"name": "x2", "datatype": "FP32", "shape": [2], "data": [1, 2]},'
        ' {"name": "colour", "datatype": "BYTES", "shape": [2],'
        ' "parameters": {"binary_data_size": ' + str(len(colour)) + "}}]}"
    )
    with pytest.raises(InvalidInput) as info:
        _v2(manifest, header, colour)
    error = info.value.to_dict()
    assert (error["instance"], error["feature"]) == (1, "colour")


def test_surrogate_over_http_is_a_400_for_that_request_only(service: InProcessService) -> None:
    poisoned = '{"instances": [{"x1": 1, "x2": 2, "colour": "\\ud800"}]}'
    headers = {"content-type": "application/json"}
    bad = service.post("/v1/models/toy/predict", content=poisoned.encode(), headers=headers)
    assert bad.status_code == 400, bad.text
    assert (bad.json()["instance"], bad.json()["feature"]) == (0, "colour")
    v2 = service.post(
        "/v2/models/toy/infer",
        content=('{"inputs": ' + _inputs(colour='"\\ud800", "red"') + "}").encode(),
        headers=headers,
    )
    assert v2.status_code == 400, v2.text
    assert "element 0, feature 'colour'" in v2.json()["error"]
    good = service.post("/v1/models/toy/predict", json={"instances": [orjson.loads(ROW)]})
    assert good.status_code == 200, good.text


# -- every V2 field against the protocol's types -------------------------------------------------

TENSOR = '{"name": "x1", "datatype": "FP32", "shape": [2], "data": [1, 2]'
REST = (
    ', {"name": "x2", "datatype": "FP32", "shape": [2], "data": [1, 2]},'
    ' {"name": "colour", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]'
)


def _with_x1(extra: str) -> str:
    return '{"inputs": [' + TENSOR + extra + "}" + REST + "}"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        # request-level fields
        ('{"id": 7, "inputs": ' + _inputs() + "}", "'id'"),
        ('{"id": null, "inputs": ' + _inputs() + "}", "'id'"),
        ('{"id": ["a"], "inputs": ' + _inputs() + "}", "'id'"),
        ('{"parameters": [], "inputs": ' + _inputs() + "}", "parameters"),
        ('{"parameters": "x", "inputs": ' + _inputs() + "}", "parameters"),
        ('{"parameters": 3, "inputs": ' + _inputs() + "}", "parameters"),
        ('{"parameters": null, "inputs": ' + _inputs() + "}", "parameters"),
        ('{"parameters": {"a": {"b": 1}}, "inputs": ' + _inputs() + "}", "parameters['a']"),
        ('{"parameters": {"a": [1]}, "inputs": ' + _inputs() + "}", "parameters['a']"),
        ('{"parameters": {"a": null}, "inputs": ' + _inputs() + "}", "parameters['a']"),
        (
            '{"parameters": {"binary_data_output": 1}, "inputs": ' + _inputs() + "}",
            "parameters.binary_data_output",
        ),
        ('{"inputs": {"x1": 1}}', "'inputs'"),
        ('{"inputs": null}', "'inputs'"),
        ('{"inputs": ["x1"]}', "inputs[0]"),
        ('{"inputs": [{"name": 3}]}', "inputs[0]"),
        # tensor-level fields
        (_with_x1(', "parameters": []'), "inputs[0].parameters"),
        (_with_x1(', "parameters": "binary"'), "inputs[0].parameters"),
        (_with_x1(', "parameters": 8'), "inputs[0].parameters"),
        (_with_x1(', "parameters": null'), "inputs[0].parameters"),
        (_with_x1(', "parameters": {"binary_data_size": [8]}'), "inputs[0].parameters"),
        (_with_x1(', "parameters": {"binary_data_size": "8"}'), "binary_data_size"),
        (_with_x1(', "parameters": {"binary_data_size": 0}'), "both 'data'"),
        ('{"inputs": [' + TENSOR.replace("[2]", '"2"') + "}" + REST + "}", "shape"),
        ('{"inputs": [' + TENSOR.replace("[2]", "[-2]") + "}" + REST + "}", "shape"),
        ('{"inputs": [' + TENSOR.replace("[2]", "[2.0]") + "}" + REST + "}", "shape"),
        ('{"inputs": [' + TENSOR.replace("[2]", "[true]") + "}" + REST + "}", "shape"),
        ('{"inputs": [' + TENSOR.replace("[2]", "null") + "}" + REST + "}", "shape"),
        ('{"inputs": [' + TENSOR.replace('"FP32"', "32") + "}" + REST + "}", "datatype"),
        ('{"inputs": [' + TENSOR.replace('"FP32"', "null") + "}" + REST + "}", "datatype"),
        ('{"inputs": [' + TENSOR.replace('"FP32"', "[]") + "}" + REST + "}", "datatype"),
        ('{"inputs": [' + TENSOR.replace("[1, 2]", '"12"') + "}" + REST + "}", "'data'"),
        ('{"inputs": [' + TENSOR.replace("[1, 2]", "{}") + "}" + REST + "}", "'data'"),
        # outputs
        ('{"outputs": {"name": "label"}, "inputs": ' + _inputs() + "}", "'outputs'"),
        ('{"outputs": null, "inputs": ' + _inputs() + "}", "'outputs'"),
        ('{"outputs": ["label"], "inputs": ' + _inputs() + "}", "outputs[0]"),
        ('{"outputs": [{"name": 1}], "inputs": ' + _inputs() + "}", "outputs[0]"),
        ('{"outputs": [{}], "inputs": ' + _inputs() + "}", "outputs[0]"),
        (
            '{"outputs": [{"name": "label"}, {"name": "label"}], "inputs": ' + _inputs() + "}",
            "outputs[1]",
        ),
        (
            '{"outputs": [{"name": "label", "parameters": []}], "inputs": ' + _inputs() + "}",
            "outputs[0].parameters",
        ),
        (
            '{"outputs": [{"name": "label", "parameters": null}], "inputs": ' + _inputs() + "}",
            "outputs[0].parameters",
        ),
        (
            '{"outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}],'
            ' "inputs": ' + _inputs() + "}",
            "outputs[0].parameters.binary_data",
        ),
    ],
)
def test_v2_field_of_the_wrong_type_is_a_400_naming_it(
    manifest: Manifest, body: str, named: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        _v2(manifest, body)
    assert info.value.status_code == 400
    assert named in info.value.message, info.value.message


def test_v2_tensor_parameters_list_over_http_is_400_not_500(service: InProcessService) -> None:
    response = service.post(
        "/v2/models/toy/infer",
        content=_with_x1(', "parameters": ["binary_data_size"]').encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "inputs[0].parameters" in response.json()["error"]


def test_v2_well_typed_optional_fields_are_accepted(manifest: Manifest) -> None:
    body = (
        '{"id": "r1", "parameters": {"confidence_level": 0.8, "binary_data_output": false,'
        ' "note": "any", "priority": 1}, "inputs": [' + TENSOR + ', "parameters": {}}' + REST + ","
        ' "outputs": [{"name": "label", "parameters": {"binary_data": true}},'
        ' {"name": "lower"}]}'
    )
    request = _v2(manifest, body)
    assert request.request_id == "r1"
    assert request.confidence_level == 0.8
    assert request.outputs == (("label", True), ("lower", False))


# -- booleans for a feature trained from a True/False column ------------------------------------


@pytest.fixture
def flag_manifest(manifest: Manifest) -> Manifest:
    """The toy manifest with its categorical feature trained from a bool column."""
    features = [
        *manifest.features[:2],
        CategoricalFeature(name="colour", categories=["False", "True"]),
    ]
    return manifest.model_copy(update={"features": features})


def test_json_booleans_become_the_text_the_trainer_stored(flag_manifest: Manifest) -> None:
    body = '{"instances": [{"x1": 1, "x2": 2, "colour": true}, {"x1": 1, "x2": 2, "colour": false},'
    body += ' {"x1": 1, "x2": 2, "colour": null}, {"x1": 1, "x2": 2, "colour": "True"}]}'
    batch = _native(flag_manifest, body).batch
    assert batch.columns["colour"][:, 0].tolist() == ["True", "False", "", "True"]
    request = _v2(flag_manifest, '{"inputs": ' + _inputs(colour="false, true") + "}")
    assert request.batch.columns["colour"][:, 0].tolist() == ["False", "True"]


def test_v2_bool_tensor_for_a_boolean_feature(flag_manifest: Manifest) -> None:
    as_json = _inputs(colour="true, false").replace('"BYTES"', '"BOOL"')
    request = _v2(flag_manifest, '{"inputs": ' + as_json + "}")
    assert request.batch.columns["colour"][:, 0].tolist() == ["True", "False"]
    binary = (
        '{"inputs": [{"name": "x1", "datatype": "FP32", "shape": [2], "data": [1, 2]},'
        ' {"name": "x2", "datatype": "FP32", "shape": [2], "data": [1, 2]},'
        ' {"name": "colour", "datatype": "BOOL", "shape": [2, 1],'
        ' "parameters": {"binary_data_size": 2}}]}'
    )
    request = _v2(flag_manifest, binary, b"\x00\x01")
    assert request.batch.columns["colour"][:, 0].tolist() == ["False", "True"]
    with pytest.raises(InvalidInput, match="element 1"):
        _v2(flag_manifest, binary, b"\x00\x07")
    with pytest.raises(InvalidInput, match="element 0"):
        _v2(flag_manifest, '{"inputs": ' + as_json.replace("true, false", '"True", false') + "}")


def test_booleans_stay_refused_for_other_categorical_features(manifest: Manifest) -> None:
    with pytest.raises(InvalidInput) as info:
        _native(manifest, '{"instances": [{"x1": 1, "x2": 2, "colour": true}]}')
    assert (info.value.to_dict()["instance"], info.value.to_dict()["feature"]) == (0, "colour")
    with pytest.raises(InvalidInput, match="datatype BYTES"):
        _v2(manifest, '{"inputs": ' + _inputs().replace('"BYTES"', '"BOOL"') + "}")
