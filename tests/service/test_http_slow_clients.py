"""Slow and hostile clients against a real ``probserve serve``, with real sockets.

Each server gets small deadlines (one second) so a test waits about that long, never for the
defaults. Waits are bounded by socket timeouts well above the deadlines; nothing asserts a
duration except the SIGTERM test, whose bound (15 s) is far from both the old behaviour (the
30 s graceful period) and the new one (at once).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from service.http.protocol import ConnectionLimits, body_deadline_s
from tests.service.conftest import LiveServer, start_live_server, write_test_bundle

LIMIT = 64 * 1024
PREDICT = "/v1/models/toy/predict"
ROW = {"x1": 0.3, "x2": 4.0, "colour": "red"}

FAST_DEADLINES = (
    "--header-timeout-s", "1", "--body-timeout-s", "1", "--max-request-bytes", str(LIMIT),
)  # fmt: skip


def test_body_deadline_is_base_plus_size_over_rate() -> None:
    limits = ConnectionLimits(
        header_timeout_s=5, body_timeout_s=10, body_min_bytes_per_s=1000, max_body_bytes=5000
    )
    assert body_deadline_s(2000, limits) == 12.0  # 10 + 2000 / 1000
    assert body_deadline_s(0, limits) == 10.0
    assert body_deadline_s(None, limits) == 15.0  # chunked: the limit's worth
    assert body_deadline_s(10**9, limits) == 15.0  # an announced size counts up to the limit
    assert limits.linger_bytes == 16 * 1024 * 1024  # at least 16 MiB dropped after an early answer
    assert replace(limits, max_body_bytes=8 * 1024 * 1024).linger_bytes == 32 * 1024 * 1024


def _closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes (True) or the socket timeout passes in silence (False)."""
    try:
        while sock.recv(65536):
            pass  # whatever was still due (the rest of an answer)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def _start(repository: Path, tmp_path: Path, *args: str) -> LiveServer:
    # No prediction log: these tests are about the HTTP front alone.
    return start_live_server(
        repository, tmp_path / "server.log", *args, PROBSERVE_PREDICTION_LOG_URL="none"
    )


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module: one-second deadlines, a 64 KiB limit, 16 connections."""
    tmp_path = tmp_path_factory.mktemp("slow-clients")
    write_test_bundle(tmp_path / "models")
    server = _start(tmp_path / "models", tmp_path, *FAST_DEADLINES, "--max-connections", "16")
    yield server
    assert server.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"POST /v1/models/toy/predict HTTP/1.1\r\nHost: x\r\nContent-Le",
        b'POST /v1/models/toy/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"inst',
        b"POST /v1/models/toy/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n",
    ],
    ids=["nothing", "half-headers", "half-body", "half-chunked-body"],
)
def test_a_stalled_client_is_disconnected(fast_server: LiveServer, sent: bytes) -> None:
    with _connect(fast_server) as sock:
        sock.sendall(sent)
        assert _closed_by_server(sock), "the server held a stalled connection for 10 s"


@pytest.mark.slow
def test_a_kept_alive_connection_stalling_in_its_second_request_is_disconnected(
    fast_server: LiveServer,
) -> None:
    body = json.dumps({"instances": [ROW]}).encode()
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with _connect(fast_server) as sock:
        sock.sendall(head.encode() + body)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        sock.sendall(head.encode())  # the next request's headers, and then nothing
        assert _closed_by_server(sock)


@pytest.mark.slow
def test_idle_sockets_past_the_connection_limit_do_not_stop_good_traffic(
    fast_server: LiveServer,
) -> None:
    server = fast_server
    idle: list[socket.socket] = []
    try:
        idle = [_connect(server) for _ in range(40)]
        # While they are open the limit is in force: a new request is refused at once, not queued.
        refused = httpx.post(server.url + PREDICT, json={"instances": [ROW]}, timeout=10)
        assert refused.status_code == 503
        # The header deadline frees every slot they held ...
        assert all(_closed_by_server(sock) for sock in idle)
        # ... and good traffic flows again.
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(8):
                response = client.post(PREDICT, json={"instances": [ROW]})
                assert response.status_code == 200, response.text
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.slow
def test_sigterm_with_a_half_sent_body_exits_at_once(
    bundle_repository: Path, tmp_path: Path
) -> None:
    # A long body deadline: only the shutdown itself may end this request.
    server = _start(bundle_repository, tmp_path, "--body-timeout-s", "600")
    with _connect(server) as sock:
        head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head.encode() + b'{"instances": [')
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            pytest.fail("a half-sent body held SIGTERM (uvicorn waited its graceful period)")
    assert code == 0, server.log.read_text()


def _padded_body(size: int) -> bytes:
    """A valid predict body of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    body = json.dumps({"instances": [ROW]}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def _chunks(body: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.slow
def test_the_body_limit_is_inclusive_announced_and_chunked(fast_server: LiveServer) -> None:
    paths = (PREDICT, "/v2/models/toy/infer")
    with httpx.Client(base_url=fast_server.url, timeout=10) as client:
        for path in paths:
            at_limit, over = _padded_body(LIMIT), _padded_body(LIMIT + 1)
            # Content-Length announced.
            assert client.post(PREDICT, content=at_limit).status_code == 200
            assert client.post(path, content=over).status_code == 413
            # Chunked: no length announced, the limit is found while reading.
            assert client.post(PREDICT, content=_chunks(at_limit)).status_code == 200
            assert client.post(path, content=_chunks(over)).status_code == 413


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["announced", "chunked"])
def test_urllib_sending_an_oversize_body_reads_the_413(
    fast_server: LiveServer, chunked: bool
) -> None:
    # urllib writes the whole body before it reads a byte: closing on the unread rest makes the
    # kernel reset the connection, and urllib reports that instead of the answer. (With the stock
    # protocol, 4 MB bodies got a broken pipe or a reset 5 times out of 5 on loopback; bodies
    # under about 1 MB fit in the socket buffers and hide the bug.)
    body = b"x" * 4_000_000
    data: bytes | Iterator[bytes] = _chunks(body) if chunked else body
    request = urllib.request.Request(
        fast_server.url + PREDICT, data=data, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 413
    assert json.loads(caught.value.read())["type"] == "payload_too_large"
    # The server is fine afterwards.
    assert httpx.post(fast_server.url + PREDICT, json={"instances": [ROW]}).status_code == 200


@pytest.mark.slow
def test_workers_apply_the_same_deadlines(bundle_repository: Path, tmp_path: Path) -> None:
    # uvicorn spawns fresh interpreters for --workers: the protocol and its limits must reach
    # them (a bound functools.partial, pickled), not only the single-process server.
    server = _start(bundle_repository, tmp_path, *FAST_DEADLINES, "--workers", "2")
    try:
        for _ in range(4):  # each connection lands on whichever worker accepts it first
            with _connect(server) as sock:
                sock.sendall(b"POST /v1/models/toy/predict HTTP/1.1\r\nHost: x\r\n")
                assert _closed_by_server(sock)
        response = httpx.post(server.url + PREDICT, json={"instances": [ROW]}, timeout=10)
        assert response.status_code == 200, response.text
    finally:
        assert server.stop() == 0
