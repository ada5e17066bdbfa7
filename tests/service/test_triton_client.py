"""The stock ``tritonclient.http`` client, unchanged, against a real ``probserve serve``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.service.conftest import (
    ADMIN_TOKEN,
    TEST_CLASSES,
    LiveServer,
    start_live_server,
    write_test_bundle,
)

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server for the module (start-up dominates these tests' time)."""
    root = tmp_path_factory.mktemp("triton")
    write_test_bundle(root / "models", "toy")
    server = start_live_server(root / "models", root / "server.log")
    yield server
    assert server.stop() == 0


def _client(server: LiveServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.port}")


def _inputs(binary: bool) -> list[triton.InferInput]:
    x1 = triton.InferInput("x1", [3, 1], "FP32")
    x1.set_data_from_numpy(
        np.array([[0.5], [np.nan], [-1.0]], dtype=np.float32), binary_data=binary
    )
    x2 = triton.InferInput("x2", [3, 1], "FP32")
    x2.set_data_from_numpy(np.array([[4.0], [6.0], [5.0]], dtype=np.float32), binary_data=binary)
    colour = triton.InferInput("colour", [3, 1], "BYTES")
    colour.set_data_from_numpy(
        np.array([["red"], [""], ["blue"]], dtype=object), binary_data=binary
    )
    return [x1, x2, colour]


def test_metadata_endpoints_satisfy_the_client(live_server: LiveServer) -> None:
    client = _client(live_server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("toy")
    assert client.is_model_ready("toy", "1")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata()["name"] == "probserve"
    meta = client.get_model_metadata("toy")
    assert [i["name"] for i in meta["inputs"]] == ["x1", "x2", "colour"]
    assert meta["parameters"]["classes"] == TEST_CLASSES


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_with_the_stock_client(live_server: LiveServer, binary: bool) -> None:
    client = _client(live_server)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("probabilities", "lower", "upper", "label", "prediction_set")
    ]
    result = client.infer(
        "toy",
        _inputs(binary),
        outputs=outputs,
        request_id="triton-1",
        parameters={"confidence_level": 0.9},
    )
    response = result.get_response()
    assert response["id"] == "triton-1"
    assert response["parameters"]["confidence_level"] == 0.9
    p = result.as_numpy("probabilities")
    lower, upper = result.as_numpy("lower"), result.as_numpy("upper")
    labels = result.as_numpy("label")
    sets = result.as_numpy("prediction_set")
    assert p.shape == lower.shape == upper.shape == sets.shape == (3, 3)
    assert p.dtype == np.float32 and sets.dtype == np.bool_
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(lower <= p + 1e-6) and np.all(p <= upper + 1e-6)
    decoded = [x.decode() if isinstance(x, bytes) else x for x in labels]
    assert decoded == [TEST_CLASSES[i] for i in p.argmax(axis=1)]


def test_infer_without_requested_outputs_returns_all(live_server: LiveServer) -> None:
    result = _client(live_server).infer("toy", _inputs(True))
    for name in ("probabilities", "lower", "upper", "label", "prediction_set"):
        assert result.as_numpy(name) is not None, name


def test_client_sees_the_error_message(live_server: LiveServer) -> None:
    client = _client(live_server)
    wrong = triton.InferInput("colour", [3, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros((3, 1), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("toy", [*_inputs(True)[:2], wrong])
    assert info.value.status() == "400"
    assert "'colour'" in info.value.message() and "BYTES" in info.value.message()
    with pytest.raises(InferenceServerException) as missing:
        client.infer("nope", _inputs(True))
    assert missing.value.status() == "404"
    assert client.infer("toy", _inputs(True)).as_numpy("label") is not None


def test_model_control_with_the_client(live_server: LiveServer) -> None:
    client = _client(live_server)
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("toy")
    assert info.value.status() == "401"
    index = client.get_model_repository_index(headers=AUTH)
    assert index == [{"name": "toy", "version": "1", "state": "READY", "reason": ""}]
    client.unload_model("toy", headers=AUTH)
    assert not client.is_model_ready("toy")
    client.load_model("toy", headers=AUTH)
    assert client.is_model_ready("toy")
