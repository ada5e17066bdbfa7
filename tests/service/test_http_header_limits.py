"""Header blocks past the bound and clients that vanish mid-pipeline, against a real server with
real sockets: a 431 that closes the connection, and no traceback in the log for a peer that left
(it is counted in ``probserve_errors_total``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import LiveServer, start_live_server, write_test_bundle

PREDICT = "/v1/models/toy/predict"
ROW = {"x1": 0.3, "x2": 4.0, "colour": "red"}
#: A small bound, so the test sends kilobytes, not the default's 64 KiB.
LIMIT = 4096


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    repository = tmp_path / "models"
    write_test_bundle(repository, "toy")
    live = start_live_server(
        repository,
        tmp_path / "server.log",
        "--max-header-bytes",
        str(LIMIT),
        "--header-timeout-s",
        "5",
    )
    yield live
    live.stop()


def _request(path: str, body: bytes, extra_headers: bytes = b"") -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + extra_headers
        + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 10 s of silence)."""
    sock.settimeout(10)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def _errors(server: LiveServer, kind: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("probserve_errors_total{") and f'type="{kind}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


BODY = json.dumps({"instances": [ROW]}).encode()


def test_headers_just_under_the_bound_are_served(server: LiveServer) -> None:
    # Request line and the other headers take well under 200 bytes; this fills the rest.
    filler = b"x-filler: " + b"a" * (LIMIT - 400) + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_request(PREDICT, BODY, filler))
        sock.settimeout(10)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "dribbled"])
def test_a_header_block_past_the_bound_is_431_and_closes(server: LiveServer, split: bool) -> None:
    oversized = b"".join(b"x-h%d: %s\r\n" % (i, b"b" * 500) for i in range(40))  # ~20 KiB
    request = _request(PREDICT, BODY, oversized)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        if split:
            # Arriving in pieces: the bound holds while the block is still incomplete.
            for start in range(0, len(request), 1000):
                try:
                    sock.sendall(request[start : start + 1000])
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(0.005)
        else:
            sock.sendall(request)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["type"] == "headers_too_large"
    assert answer.count(b"HTTP/1.1") == 1  # the request was never served
    assert _errors(server, "headers_too_large") == 1


def test_endless_headers_are_cut_at_the_bound_not_read_to_the_end(server: LiveServer) -> None:
    # One header that never ends: the 431 must come while the client is still sending, long
    # before the 2 MiB it offers (unbounded, the server would buffer it all and wait for more).
    answer = b""
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-endless: ")
        sock.settimeout(0.05)
        try:
            while sent < 2 * 1024 * 1024 and not answer:
                sock.sendall(b"c" * 4096)
                sent += 4096
                with contextlib.suppress(TimeoutError):
                    answer = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not answer:
            answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert sent <= 64 * 1024, f"the 431 came only after {sent} bytes of one header"
    # The server is fine for everyone else.
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def test_clients_that_vanish_mid_pipeline_leave_no_traceback(server: LiveServer) -> None:
    good = _request(PREDICT, BODY)
    malformed = b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-length: zz\r\n\r\n"
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            # SO_LINGER 0: close() resets the connection at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(good * 20 + malformed)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _errors(server, "client_gone") == 0:
        time.sleep(0.2)
    assert _errors(server, "client_gone") >= 1
    answer = httpx.post(server.url + PREDICT, json={"instances": [ROW]}, timeout=10)
    assert answer.status_code == 200
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


def test_an_answer_for_a_closed_connection_is_counted_not_raised(server: LiveServer) -> None:
    # The exact path: the server answers a malformed request 400 and closes while the first
    # pipelined prediction is still being computed; that answer has nowhere to go.
    before = _errors(server, "client_gone")
    good = _request(PREDICT, BODY)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(good * 5 + b"GARBAGE\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1") == 1, answer[:300]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _errors(server, "client_gone") == before:
        time.sleep(0.1)
    assert _errors(server, "client_gone") == before + 1
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log and "RuntimeError" not in log, log[-3000:]
