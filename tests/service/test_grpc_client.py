"""The stock ``tritonclient.grpc`` client, unchanged, against a real ``probserve serve``.

The gRPC front answers what the V2 REST front answers for the same rows (the same pipeline),
refuses bad input with the REST protocol's messages, guards model control with the admin
token, and counts and logs its requests with protocol "grpc".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.codecs.v2 import serialize_bytes
from service.predlog.reader import read_window
from tests.service.conftest import ADMIN_TOKEN, TEST_CLASSES, write_test_bundle
from tests.service.grpc_support import (
    COLOUR,
    X1,
    X2,
    GrpcServer,
    grpc_inputs,
    start_grpc_server,
)
from tests.service.support import samples, value

pytestmark = pytest.mark.slow

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
OUTPUTS = ("probabilities", "lower", "upper", "label", "prediction_set")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    """One real server for the module, gRPC on."""
    root = tmp_path_factory.mktemp("grpc")
    write_test_bundle(root / "models", "toy")
    server = start_grpc_server(root / "models", root / "server.log")
    yield server
    assert server.stop() == 0


def _rest_inputs(
    x1: np.ndarray, x2: np.ndarray, colour: np.ndarray
) -> list[triton_http.InferInput]:
    inputs = []
    for name, array in (("x1", x1), ("x2", x2), ("colour", colour)):
        datatype = "BYTES" if array.dtype == object else "FP32"
        tensor = triton_http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    return inputs


def _rest(server: GrpcServer) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.url.removeprefix("http://"))


def _refusal(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    return info.value


def test_health_and_metadata_are_the_rest_ones(server: GrpcServer) -> None:
    client = server.client()
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("toy")
    assert client.is_model_ready("toy", "1")
    unknown = _refusal(lambda: client.is_model_ready("nope"))
    assert unknown.status() == "StatusCode.NOT_FOUND"
    assert unknown.message() == "unknown model 'nope'"
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "probserve"
    assert meta["extensions"] == ["model_repository"]
    model = client.get_model_metadata("toy", as_json=True)
    rest = httpx.get(f"{server.url}/v2/models/toy").json()
    assert model["name"] == "toy" and model["versions"] == ["1"]
    assert model["platform"] == rest["platform"] == "onnxruntime_onnx"
    for key in ("inputs", "outputs"):  # JSON of int64 shapes: strings
        got = [{**t, "shape": [int(d) for d in t["shape"]]} for t in model[key]]
        assert got == rest[key]
    assert [t["name"] for t in model["outputs"]] == list(OUTPUTS)


def test_infer_answers_what_v2_rest_answers(server: GrpcServer) -> None:
    outputs = [triton_grpc.InferRequestedOutput(name) for name in OUTPUTS]
    result = server.client().infer(
        "toy",
        grpc_inputs(),
        outputs=outputs,
        request_id="grpc-1",
        parameters={"confidence_level": 0.9},
    )
    rest = _rest(server).infer(
        "toy",
        _rest_inputs(X1, X2, COLOUR),
        outputs=[triton_http.InferRequestedOutput(name, binary_data=True) for name in OUTPUTS],
        parameters={"confidence_level": 0.9},
    )
    for name in ("probabilities", "lower", "upper", "prediction_set"):
        got, expected = result.as_numpy(name), rest.as_numpy(name)
        assert got.dtype == expected.dtype and got.shape == expected.shape == (3, 3), name
        assert np.array_equal(got, expected), name  # exactly: one pipeline, raw float32
    labels = [v.decode() for v in result.as_numpy("label")]
    assert labels == [v.decode() for v in rest.as_numpy("label")]
    assert set(labels) <= set(TEST_CLASSES)
    response = result.get_response(as_json=True)
    assert response["model_name"] == "toy" and response["model_version"] == "1"
    assert response["id"] == "grpc-1"
    assert response["parameters"]["confidence_level"] == {"double_param": 0.9}
    assert response["parameters"]["conformal_revision"] == {"int64_param": "0"}
    assert np.allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, atol=1e-5)


def test_tensors_in_contents_decode_as_raw_ones(server: GrpcServer) -> None:
    # Not what tritonclient sends, but the protocol's other form: typed repeated fields.
    request = service_pb2.ModelInferRequest(model_name="toy")
    x1 = request.inputs.add(name="x1", datatype="FP32", shape=[3, 1])
    x1.contents.fp32_contents.extend(X1.ravel().tolist())
    x2 = request.inputs.add(name="x2", datatype="FP32", shape=[3])
    x2.contents.fp32_contents.extend(X2.ravel().tolist())
    colour = request.inputs.add(name="colour", datatype="BYTES", shape=[3, 1])
    colour.contents.bytes_contents.extend(v.encode() for v in COLOUR.ravel())
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(request, timeout=10)
    raw = server.client().infer("toy", grpc_inputs()).get_response()
    assert [o.name for o in answer.outputs] == list(OUTPUTS)
    assert list(answer.raw_output_contents) == list(raw.raw_output_contents)


def test_bytes_wire_format_by_hand() -> None:
    # Triton's BYTES layout: a little-endian uint32 length before each element's bytes.
    assert serialize_bytes(["ab", b"c", ""]) == (
        b"\x02\x00\x00\x00ab" + b"\x01\x00\x00\x00c" + b"\x00\x00\x00\x00"
    )


@pytest.mark.parametrize(
    ("x1", "colour_datatype", "expected"),
    [
        (
            np.array([[0.5], [np.inf], [-1.0]], dtype=np.float32),
            "BYTES",
            "element 1, feature 'x1': expected a finite number or null, got infinity",
        ),
        (X1, "FP32", "input 'colour': expected datatype BYTES, got the string 'FP32'"),
    ],
    ids=["infinity", "datatype"],
)
def test_bad_input_is_invalid_argument_with_the_rest_message(
    server: GrpcServer, x1: np.ndarray, colour_datatype: str, expected: str
) -> None:
    colour = (
        np.array([[1.0], [2.0], [3.0]], dtype=np.float32) if colour_datatype == "FP32" else COLOUR
    )
    refused = _refusal(lambda: server.client().infer("toy", grpc_inputs(x1=x1, colour=colour)))
    assert refused.status() == "StatusCode.INVALID_ARGUMENT"
    assert refused.message() == expected
    rest = _refusal(lambda: _rest(server).infer("toy", _rest_inputs(x1, X2, colour)))
    assert rest.message() == expected


def test_unknown_input_and_row_count_messages(server: GrpcServer) -> None:
    extra = triton_grpc.InferInput("x9", [3, 1], "FP32")
    extra.set_data_from_numpy(X1)
    refused = _refusal(lambda: server.client().infer("toy", [*grpc_inputs(), extra]))
    assert refused.status() == "StatusCode.INVALID_ARGUMENT"
    assert refused.message() == "unknown input 'x9': expected the inputs ['x1', 'x2', 'colour']"
    short = grpc_inputs(x2=X2[:2])
    refused = _refusal(lambda: server.client().infer("toy", short))
    assert refused.message() == "input 'x2' has 2 rows but the previous inputs have 3"
    missing = _refusal(lambda: server.client().infer("nope", grpc_inputs()))
    assert missing.status() == "StatusCode.NOT_FOUND"
    assert missing.message() == "unknown model 'nope'"


def test_model_control_needs_the_admin_token(server: GrpcServer) -> None:
    client = server.client()
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": ADMIN_TOKEN}):
        refused = _refusal(lambda h=headers: client.load_model("toy", headers=h))
        assert refused.status() == "StatusCode.UNAUTHENTICATED", headers
        assert refused.message() == "model control needs 'Authorization: Bearer <admin token>'"
        refused = _refusal(lambda h=headers: client.get_model_repository_index(headers=h))
        assert refused.status() == "StatusCode.UNAUTHENTICATED"
    index = client.get_model_repository_index(headers=AUTH, as_json=True)
    assert index["models"] == [{"name": "toy", "version": "1", "state": "READY"}]
    client.unload_model("toy", headers=AUTH)
    assert not client.is_model_ready("toy")
    client.load_model("toy", headers=AUTH)
    assert client.is_model_ready("toy")
    unknown = _refusal(lambda: client.load_model("nope", headers=AUTH))
    assert unknown.status() == "StatusCode.NOT_FOUND"
    assert unknown.message() == "unknown model 'nope'"


def test_requests_are_counted_and_logged_as_grpc(tmp_path: Path) -> None:
    write_test_bundle(tmp_path / "models", "toy")
    server = start_grpc_server(tmp_path / "models", tmp_path / "server.log")
    try:
        client = server.client()
        for k in range(2):
            client.infer("toy", grpc_inputs(), request_id=f"g{k}")
        bad = grpc_inputs(x1=np.array([[np.inf], [0.0], [0.0]], dtype=np.float32))
        _refusal(lambda: client.infer("toy", bad))
        found = samples(httpx.get(f"{server.url}/metrics").text)
    finally:
        assert server.stop() == 0
    grpc_labels = {"protocol": "grpc", "endpoint": "grpc_infer", "model": "toy"}
    duration = "probserve_request_duration_seconds_count"
    assert value(found, duration, **grpc_labels, code="2xx") == 2
    assert value(found, duration, **grpc_labels, code="4xx") == 1
    assert value(found, duration, protocol="v2") == 0
    assert value(found, "probserve_errors_total", model="toy", type="invalid_input") == 1
    assert value(found, "probserve_predictions_total", model="toy") == 6
    assert value(found, "probserve_requests_in_flight") == 1  # the scrape itself
    rows = read_window(str(tmp_path / "predictions"), "toy")
    assert list(zip(rows["request_id"], rows["instance"], rows["protocol"], strict=True)) == [
        ("g0", 0, "grpc"), ("g0", 1, "grpc"), ("g0", 2, "grpc"),
        ("g1", 0, "grpc"), ("g1", 1, "grpc"), ("g1", 2, "grpc"),
    ]  # fmt: skip
