"""Property tests: any JSON value in any field of a request is decoded or refused with a 4xx.

A valid native and a valid V2 request are taken, one field (or the whole body) is replaced by an
arbitrary JSON value, and the body goes through the real wire path (JSON text, orjson or the
stdlib fallback, the codec). The outcome must be an :class:`InvalidInput` whose body can be
written as JSON, or a batch that ONNX Runtime runs: never another exception. Hypothesis runs a
fixed, bounded set of examples (derandomized, no example database) so CI sees the same cases.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.bundle import Manifest
from service.codecs.columns import load_json
from service.codecs.records import decode_predict_request
from service.codecs.v2 import decode_infer_request
from service.errors import InvalidInput
from service.runtime import LoadedModel, load_model
from tests.service.conftest import write_test_bundle

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Text includes lone surrogates (category Cs), which only the fallback parser lets through; a few
# fixed strings (a known category, lone surrogates) make sure they turn up in few examples.
TEXT = st.text(st.characters(exclude_categories=()), max_size=6) | st.sampled_from(
    ["", "red", "\ud800", "x\udc00y", "FP32", "label"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=8,
)
#: Scalars on their own as often as structures, so that many replaced leaves stay decodable and
#: the batches that pass really run through ONNX Runtime.
ANY_VALUE = SCALARS | JSON_VALUES

NATIVE = {
    "instances": [{"x1": 0.5, "x2": None, "colour": "red"}, {"x1": -1, "x2": 3, "colour": None}],
    "confidence_level": 0.9,
}
V2 = {
    "id": "r1",
    "parameters": {"confidence_level": 0.8, "binary_data_output": False},
    "inputs": [
        {"name": "x1", "datatype": "FP32", "shape": [2, 1], "data": [[0.5], [1.0]]},
        {"name": "x2", "datatype": "INT64", "shape": [2], "data": [1, 2], "parameters": {}},
        {"name": "colour", "datatype": "BYTES", "shape": [2], "data": ["blue", None]},
    ],
    "outputs": [{"name": "label", "parameters": {"binary_data": False}}, {"name": "lower"}],
}

Path_ = tuple[str | int, ...]


def _paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every place in a request a value sits, the whole body included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


def _replace(request: Any, path: Path_, value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(request)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def _body(payload: Any) -> bytes:
    # The stdlib writer: NaN/Infinity literals and \ud800 escapes, which send the body down the
    # fallback parser exactly as a Python client's json.dumps would.
    return json.dumps(payload).encode()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(write_test_bundle(tmp_path_factory.mktemp("models"), "toy"))


def _check(outcome: Any, model: LoadedModel) -> None:
    """A decoded batch must be exactly what the graph takes, and must run."""
    event("decoded")
    columns = outcome.columns
    assert list(columns) == model.manifest.feature_names
    for array in columns.values():
        assert array.shape == (outcome.rows, 1)
        if array.dtype == object:
            assert all(type(v) is str for v in array[:, 0])
    out = model.run(columns)
    assert out.shape[0] == outcome.rows


def _refused(error: InvalidInput) -> None:
    event("refused")  # --hypothesis-show-statistics shows the split between the two outcomes
    assert 400 <= error.status_code < 500
    orjson.dumps(error.to_dict())  # the answer can be written


@PROPERTY_SETTINGS
@given(data=st.data(), value=ANY_VALUE)
def test_native_any_value_in_any_field(model: LoadedModel, data: Any, value: Any) -> None:
    manifest: Manifest = model.manifest
    path = data.draw(st.sampled_from(_paths(NATIVE)), label="path")
    body = _body(_replace(NATIVE, path, value))
    try:
        native = decode_predict_request(load_json(body), manifest, max_rows=10, default_level=0.9)
    except InvalidInput as error:
        _refused(error)
        return
    assert 0.5 <= native.confidence_level <= 0.999
    _check(native.batch, model)


@PROPERTY_SETTINGS
@given(data=st.data(), value=ANY_VALUE)
def test_v2_any_value_in_any_field(model: LoadedModel, data: Any, value: Any) -> None:
    manifest: Manifest = model.manifest
    path = data.draw(st.sampled_from(_paths(V2)), label="path")
    body = _body(_replace(V2, path, value))
    try:
        request = decode_infer_request(body, None, manifest, max_rows=10, default_level=0.9)
    except InvalidInput as error:
        _refused(error)
        return
    assert 0.5 <= request.confidence_level <= 0.999
    assert request.request_id is None or isinstance(request.request_id, str)
    assert all(type(binary) is bool for _, binary in request.outputs)
    _check(request.batch, model)


@PROPERTY_SETTINGS
@given(value=ANY_VALUE, key=TEXT)
def test_an_extra_key_in_every_object(model: LoadedModel, value: Any, key: str) -> None:
    # A new key with any value in every object of a request at once.
    def widen(node: Any) -> Any:
        if isinstance(node, dict):
            return {**{k: widen(v) for k, v in node.items()}, key: value}
        if isinstance(node, list):
            return [widen(v) for v in node]
        return node

    manifest = model.manifest
    try:
        native = decode_predict_request(
            load_json(_body(widen(NATIVE))), manifest, max_rows=10, default_level=0.9
        )
        _check(native.batch, model)
    except InvalidInput as error:
        _refused(error)
    try:
        request = decode_infer_request(
            _body(widen(V2)), None, manifest, max_rows=10, default_level=0.9
        )
        _check(request.batch, model)
    except InvalidInput as error:
        _refused(error)
