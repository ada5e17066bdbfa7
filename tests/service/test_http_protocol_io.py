"""The hardened protocol's I/O policy, on a real uvloop transport over a loopback socket pair.

The transport is the real one, wrapped to count the calls that become ``send`` syscalls; the
client reads the real bytes. What is pinned: an answer leaves in one transport call (not
uvicorn's two), a streamed answer's head still leaves before its body is ready, and a request
that arrives in one read costs no deadline timer while a partial one gets exactly one, which
more bytes of the same phase never push back.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import pytest
import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.http.connections import ConnectionCounters
from service.http.protocol import ConnectionLimits, HardenedProtocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any]

LIMITS = ConnectionLimits(
    header_timeout_s=5.0, body_timeout_s=5.0, body_min_bytes_per_s=1024, max_body_bytes=65536
)
REQUEST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"


class _CountingTransport:
    """The real transport; counts write/writelines calls (each is one send on the socket)."""

    def __init__(self, real: asyncio.Transport) -> None:
        self.real = real
        self.sends: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))
        self.real.write(data)

    def writelines(self, parts: Any) -> None:
        parts = list(parts)
        self.sends.append(b"".join(parts))
        self.real.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _app(body: bytes, body_after_s: float = 0.0) -> App:
    """An app answering ``body``; its body is ready ``body_after_s`` after its head."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        length = str(len(body)).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
        )
        if body_after_s:
            await asyncio.sleep(body_after_s)
        await send({"type": "http.response.body", "body": body})

    return app


_answer = _app(b"ok")
_streamed = _app(b"late", body_after_s=0.5)  # the head must not wait for the body


class _CountingLoop(uvloop.Loop):
    """uvloop, noting each timer's callback."""

    def __init__(self) -> None:
        super().__init__()
        self.timers: list[Any] = []

    def call_later(self, delay: float, callback: Any, *args: Any, **kw: Any) -> Any:  # type: ignore[override]
        self.timers.append(callback)
        return super().call_later(delay, callback, *args, **kw)


class _WithCounters:
    """An app carrying its process's counters, as the service's front does."""

    def __init__(self, app: App) -> None:
        self.inner = app
        self.counters = ConnectionCounters()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.inner(scope, receive, send)


class _Harness:
    """A HardenedProtocol serving ``app`` on one end of a socket pair; the test holds the other."""

    def __init__(self, app: App) -> None:
        self.loop = _CountingLoop()
        self.app = _WithCounters(app)
        # uvicorn wraps the app in its proxy-headers middleware: the counters are found inside.
        config = Config(app=self.app, lifespan="off", access_log=False, log_level="warning")
        config.load()
        self.protocol: HardenedProtocol | None = None
        self.transport: _CountingTransport | None = None
        harness = self

        class Spied(HardenedProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                harness.transport = _CountingTransport(transport)
                super().connection_made(harness.transport)  # type: ignore[arg-type]

        self.server_sock, self.client = socket.socketpair()
        self.client.settimeout(5)

        async def attach() -> None:
            protocol = Spied(config, ServerState(), {}, limits=LIMITS)
            self.protocol = protocol
            await self.loop.connect_accepted_socket(lambda: protocol, self.server_sock)

        self.loop.run_until_complete(attach())

    def run(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        self.client.close()
        if self.transport is not None:
            self.transport.real.close()
        self.run(0.01)
        self.loop.close()


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Iterator[_Harness]:
    h = _Harness(getattr(request, "param", _answer))
    yield h
    h.close()


def test_an_answer_leaves_in_one_send(harness: _Harness) -> None:
    for _ in range(3):  # and again on the kept-alive connection
        harness.client.sendall(REQUEST)
        harness.run(0.05)
        assert harness.transport is not None
        sends, harness.transport.sends = harness.transport.sends, []
        assert len(sends) == 1, sends  # status line, headers and body together
        assert sends[0].startswith(b"HTTP/1.1 200 OK\r\n") and sends[0].endswith(b"\r\n\r\nok")
        assert harness.client.recv(65536) == sends[0]


@pytest.mark.parametrize("harness", [_streamed], indirect=True)
def test_a_head_whose_body_is_not_ready_is_sent_at_once(harness: _Harness) -> None:
    harness.client.sendall(REQUEST)
    harness.run(0.1)  # well before the body (0.5 s)
    assert harness.transport is not None
    assert len(harness.transport.sends) == 1
    assert harness.transport.sends[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert harness.transport.sends[0].endswith(b"\r\n\r\n")  # the head alone
    harness.run(0.6)
    assert harness.transport.sends[-1] == b"late"


def test_a_request_read_whole_arms_no_deadline_and_a_partial_one_keeps_its_first(
    harness: _Harness,
) -> None:
    protocol = harness.protocol
    assert protocol is not None
    assert protocol._deadline is not None  # connected, nothing sent: the header deadline runs
    for _ in range(2):  # the second on a kept-alive connection
        harness.client.sendall(REQUEST)
        harness.run(0.05)
        assert protocol._deadline is None
        assert harness.client.recv(65536).endswith(b"ok")
    # Read whole in one go, neither request made a deadline timer (only the connect did).
    assert harness.loop.timers.count(protocol._expired) == 1
    harness.client.sendall(REQUEST[:20])  # half the next request's headers
    harness.run(0.05)
    first = protocol._deadline
    assert first is not None
    assert first.when() == pytest.approx(harness.loop.time() + LIMITS.header_timeout_s, abs=0.5)
    harness.client.sendall(REQUEST[20:30])  # more header bytes: the same deadline
    harness.run(0.05)
    assert protocol._deadline is first
    harness.client.sendall(REQUEST[30:-2])  # headers complete, body due: the body's deadline
    harness.run(0.05)
    body = protocol._deadline
    assert body is not None and body is not first
    harness.client.sendall(REQUEST[-2:])
    harness.run(0.05)
    assert protocol._deadline is None
    assert harness.loop.timers.count(protocol._expired) == 3  # connect, headers, body
    assert harness.client.recv(65536).endswith(b"ok")


@pytest.mark.parametrize("harness", [_streamed], indirect=True)
def test_requests_count_as_active_from_their_task_to_the_apps_return(harness: _Harness) -> None:
    counters = harness.app.counters
    assert harness.protocol is not None and harness.protocol.counters is counters
    harness.client.sendall(REQUEST)
    harness.run(0.1)  # the app is mid-answer (its body comes at 0.5 s)
    assert counters.active == 1
    harness.run(0.6)
    assert harness.transport is not None and harness.transport.sends[-1] == b"late"
    assert counters.active == 0
