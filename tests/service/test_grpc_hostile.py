"""Hostile gRPC clients against a real server: each probe fails its call, never the server.

After every probe a good call is answered at once: oversized messages, bytes that are not a
protobuf, callers that leave before their answer, oversized metadata, streams that never finish
their message, and a bad request sent into the same dynamic batch as good ones.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from tests.service.conftest import write_test_bundle
from tests.service.grpc_support import (
    MODEL_INFER,
    GrpcServer,
    grpc_inputs,
    open_stalled_connection,
    start_grpc_server,
)
from tests.service.support import samples, value

pytestmark = pytest.mark.slow

LIMITS = (
    "--max-request-bytes", "65536", "--max-header-bytes", "4096", "--max-connections", "50",
    "--header-timeout-s", "1",
    # Every call waits 0.2 s for a batch to form: long enough to leave before it, and for
    # calls sent together to share one ONNX call.
    "--max-queue-delay-us", "200000", "--inline-max-us", "0",
)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    """One real server with small limits and a slow batch, gRPC on."""
    root = tmp_path_factory.mktemp("grpc-hostile")
    write_test_bundle(root / "models", "toy")
    server = start_grpc_server(root / "models", root / "server.log", *LIMITS)
    yield server
    assert server.stop() == 0


def _still_serves(server: GrpcServer, within_s: float = 2.0) -> None:
    started = time.monotonic()
    result = server.client().infer("toy", grpc_inputs(), client_timeout=within_s)
    assert result.as_numpy("probabilities").shape == (3, 3)
    assert time.monotonic() - started < within_s


def _refusal(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    return info.value


def test_a_message_over_the_size_limit_is_resource_exhausted(server: GrpcServer) -> None:
    # 70 kB of text in one category: a valid value (the unknown bucket), but over 64 KiB.
    colour = np.array([["x" * 70_000]], dtype=object)
    one = np.array([[1.0]], dtype=np.float32)
    refused = _refusal(lambda: server.client().infer("toy", grpc_inputs(one, one, colour)))
    assert refused.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "65536" in refused.message()
    _still_serves(server)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff\xff\xff", b"\x2a\xff\xff\xff\xff\x0f", b"\x0a\x05to", bytes(range(256)) * 4],
    ids=["garbage", "huge-length", "truncated", "binary"],
)
def test_bytes_that_are_not_a_protobuf_end_the_call_not_the_server(
    server: GrpcServer, payload: bytes
) -> None:
    with grpc.insecure_channel(server.address) as channel:
        # No serializers: the bytes go as they are.
        raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(MODEL_INFER)
        with pytest.raises(grpc.RpcError) as info:
            raw(payload, timeout=5)
    error = info.value
    assert error.code() != grpc.StatusCode.OK
    details = error.details() or ""
    assert "Traceback" not in details and "/" not in details, details
    _still_serves(server)


def _metric(server: GrpcServer, name: str, **labels: str) -> float:
    return value(samples(httpx.get(f"{server.url}/metrics").text), name, **labels)


def test_a_caller_that_leaves_is_still_counted_once_and_the_server_unharmed(
    server: GrpcServer,
) -> None:
    served = {"protocol": "grpc", "code": "2xx"}
    before = _metric(server, "probserve_request_duration_seconds_count", **served)
    refused = _refusal(lambda: server.client().infer("toy", grpc_inputs(), client_timeout=0.05))
    assert refused.status() == "StatusCode.DEADLINE_EXCEEDED"
    # The pipeline finishes the call it started: counted once, and nothing left in flight
    # (the scrape itself is the one request in flight).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        done = _metric(server, "probserve_request_duration_seconds_count", **served)
        if done == before + 1:
            break
        time.sleep(0.05)
    assert done == before + 1
    assert _metric(server, "probserve_requests_in_flight") == 1
    _still_serves(server)


def test_metadata_over_the_header_limit_is_refused(server: GrpcServer) -> None:
    # 6 kB of metadata: under gRPC's own default (8 KiB), over --max-header-bytes 4096.
    refused = _refusal(
        lambda: server.client().infer("toy", grpc_inputs(), headers={"x-pad": "a" * 6000})
    )
    assert refused.status() in {"StatusCode.RESOURCE_EXHAUSTED", "StatusCode.INTERNAL"}
    _still_serves(server)


def test_streams_that_never_finish_do_not_lock_good_calls_out(server: GrpcServer) -> None:
    # 90 calls that sent headers and 10 bytes of a 1000-byte message, more than the server's
    # --max-connections 50: were unfinished calls counted against a cap, good calls would be
    # refused at once.
    stalled = [open_stalled_connection(server.address, 30) for _ in range(3)]
    try:
        time.sleep(0.3)
        for _ in range(3):
            _still_serves(server, within_s=1.5)
    finally:
        for conn in stalled:
            conn.close()


def test_a_connection_that_never_speaks_is_closed_at_the_header_timeout(
    server: GrpcServer,
) -> None:
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as silent:
        started = time.monotonic()
        while silent.recv(4096):  # the server's SETTINGS, then the close
            pass
        assert 0.5 < time.monotonic() - started < 3  # --header-timeout-s 1, not gRPC's 120 s
    _still_serves(server)


def test_connections_past_max_connections_are_closed(server: GrpcServer) -> None:
    opened: list[socket.socket] = []
    closed = 0
    try:
        for _ in range(60):
            try:
                opened.append(open_stalled_connection(server.address, 1))
            except OSError:  # closed by the server while the call was being sent
                closed += 1
        time.sleep(0.5)  # then whatever the server sent, its close included, has arrived
        for conn in opened:
            conn.setblocking(False)
            try:
                while conn.recv(4096):
                    pass
                closed += 1
            except BlockingIOError:  # still open: nothing more to read
                pass
            except OSError:  # reset rather than closed
                closed += 1
        assert closed >= 10  # --max-connections 50
    finally:
        for conn in opened:
            conn.close()
    time.sleep(0.3)
    _still_serves(server)


def test_a_bad_request_in_a_batch_never_fails_the_good_ones(server: GrpcServer) -> None:
    bad_x1 = np.array([[0.5], [np.inf], [-1.0]], dtype=np.float32)
    alone = server.client().infer("toy", grpc_inputs()).as_numpy("probabilities")
    rows_before = _metric(server, "probserve_batch_rows_sum", model="toy")

    async def together() -> list[object]:
        client = triton_aio.InferenceServerClient(server.address)
        try:
            calls = [client.infer("toy", grpc_inputs()) for _ in range(3)]
            calls.insert(1, client.infer("toy", grpc_inputs(x1=bad_x1)))
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await client.close()

    answers = asyncio.run(together())
    bad = answers.pop(1)
    assert isinstance(bad, InferenceServerException)
    assert bad.status() == "StatusCode.INVALID_ARGUMENT"
    assert (
        bad.message() == "element 1, feature 'x1': expected a finite number or null, got infinity"
    )
    for answer in answers:
        assert not isinstance(answer, BaseException), answer
        assert np.array_equal(answer.as_numpy("probabilities"), alone)  # type: ignore[attr-defined]
    # The good calls' 9 rows were computed; the bad one's rows never reached the batch.
    assert _metric(server, "probserve_batch_rows_sum", model="toy") == rows_before + 9
