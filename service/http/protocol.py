"""uvicorn's httptools protocol with read deadlines and a lingering close.

uvicorn bounds only the keep-alive wait. A client that connects and sends nothing, half its
headers or half its body would otherwise hold a connection (a file descriptor, and on SIGTERM the
whole graceful period) for ever. Here every connection is cut when:

* its request headers are not complete ``header_timeout_s`` after the connection (or the first
  byte of the next request on a kept-alive connection);
* its body is not complete ``body_timeout_s + size / body_min_bytes_per_s`` after the headers,
  the size being the announced Content-Length capped at the body limit (chunked: the limit).

A request line plus header block past ``max_header_bytes`` is answered 431 and the connection
closed, as nginx and Triton refuse theirs: counted while it arrives, so a client streaming
endless headers holds no more than the bound. An answer for a client that has gone (it closed
the connection, or a malformed request among its pipelined ones closed it) is dropped and
counted, never raised: a peer that leaves is normal, and a traceback per request would let any
client flood the log.

And when the app answers before the body was read (a 413), the connection is not slammed shut
on unread bytes, which makes the kernel reset it and the client (Python's ``urllib``, which sends
the whole body before reading) lose the answer. As nginx does, the server half-closes, reads and
discards up to ``linger_bytes`` more for at most ``linger_s``, then closes
(docs/architecture.md, "Request path").

The limits travel as a picklable dataclass bound with :func:`functools.partial`, so ``--workers
N`` (uvicorn spawns fresh interpreters) gets the same protocol. The counts it keeps go to the
counters of the app it serves (``service.http.connections``), found once per connection. This
module imports nothing of the service but those counters at run time: a worker unpickles it
before it answers uvicorn's 5 s start-up health check, and importing the app there (numpy, ONNX
Runtime) got workers killed on a busy machine.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http.connections import ConnectionCounters, counters_of

if TYPE_CHECKING:
    from service.settings import Settings

#: How long a lingering close may keep reading after the answer (nginx: lingering_time 30 s).
LINGER_S = 5.0


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection read deadlines (seconds) and bounds (bytes)."""

    header_timeout_s: float
    body_timeout_s: float
    body_min_bytes_per_s: int
    max_body_bytes: int
    max_header_bytes: int = 64 * 1024
    linger_s: float = LINGER_S

    @property
    def linger_bytes(self) -> int:
        """Bytes discarded at most after an early answer: 4 limits' worth, at least 16 MiB.

        Reading and dropping is cheap; the time bound (``linger_s``) is the one that matters.
        """
        return max(4 * self.max_body_bytes, 16 * 1024 * 1024)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        """The limits a server with these settings applies."""
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            body_min_bytes_per_s=settings.body_min_bytes_per_s,
            max_body_bytes=settings.max_request_bytes,
            max_header_bytes=settings.max_header_bytes,
        )


def body_deadline_s(announced: int | None, limits: ConnectionLimits) -> float:
    """Seconds a request body may take: base plus its size (capped at the limit) at the min rate."""
    size = limits.max_body_bytes if announced is None else min(announced, limits.max_body_bytes)
    return limits.body_timeout_s + size / limits.body_min_bytes_per_s


def protocol_factory(settings: Settings) -> Any:
    """What ``uvicorn.run(http=...)`` takes: the protocol class bound to the settings' limits."""
    return functools.partial(HardenedProtocol, limits=ConnectionLimits.from_settings(settings))


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


class _CycleTransport:
    """The transport as a request cycle sees it, one per connection.

    ``close()`` lingers while body bytes are due. A write is held until the next write or the
    end of this loop iteration, so uvicorn's two writes per answer (status line and headers,
    then the body) leave in one ``send``: one syscall and one segment instead of two.
    """

    def __init__(self, protocol: HardenedProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._loop = protocol.loop
        self._held: bytes | None = None
        self._flush_soon: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._flush_soon = self._loop.call_soon(self.flush)
            return
        self._held = None
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self._transport.is_closing():
            self._protocol.counters.client_gone += 1
            return
        self._transport.writelines((held, data))  # one writev, no copy

    def flush(self) -> None:
        """Send what is held (an answer's head waiting for its body, a 100 Continue)."""
        held = self._held
        if held is not None:
            self._held = None
            if self._flush_soon is not None:
                self._flush_soon.cancel()
                self._flush_soon = None
            if self._transport.is_closing():
                self._protocol.counters.client_gone += 1
            else:
                self._transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._protocol.close_lingering()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _headers_too_large_answer() -> bytes:
    body = (
        b'{"error":"request header fields too large: the request line and headers exceed the '
        b'server\'s max_header_bytes","type":"headers_too_large"}'
    )
    head = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
    )
    return head + body


#: The whole 431 answer; the service's error module is not imported here (see the module doc).
_HEADERS_TOO_LARGE = _headers_too_large_answer()

#: Where a connection's current request is; a deadline is armed when the phase changes.
_WAITING, _HEADERS, _BODY, _DONE = range(4)


async def _counted(
    counters: ConnectionCounters, app: Any, scope: Any, receive: Any, send: Any
) -> None:
    """Run the app for one request; it no longer counts as active once the app returns."""
    try:
        await app(scope, receive, send)
    finally:
        counters.active -= 1


class HardenedProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` plus header/body deadlines and a lingering close."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.counters = counters_of(config.loaded_app)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = _WAITING
        self._phase_changed = False
        self._announced: int | None = None
        self._lingering = False
        self._discarded = 0
        self._view: _CycleTransport | None = None
        # One per connection.
        self._counted_app = functools.partial(_counted, self.counters, self.app)
        #: Bytes of the current request's line and headers the parser handed over (exact), and
        #: the raw bytes of reads that began and ended inside the header block (what the
        #: parser holds of a header it has not finished).
        self._header_bytes = 0
        self._header_bytes_raw = 0
        self._oversized = False

    @property
    def _body_due(self) -> bool:
        """Headers of the current request read, its body not yet."""
        return self._phase == _BODY

    # -- deadlines ---------------------------------------------------------------------------
    # The parser callbacks only note the phase; data_received arms one deadline for where the
    # bytes left the request. A request that arrives whole in one read (the common case on a
    # kept-alive connection) then costs no timer at all, instead of three timers made and
    # cancelled. A deadline starts when its phase starts and is never pushed back by more
    # bytes of the same phase (a slow client cannot extend it).

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()  # the app, if waiting for the body, sees a disconnect

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._view = _CycleTransport(self)
        self._arm(self.limits.header_timeout_s)  # a client that sends nothing at all

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._view is not None and self._view._flush_soon is not None:
            self._view._flush_soon.cancel()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEADERS
        self._phase_changed = True
        self._header_bytes = 0
        self._header_bytes_raw = 0

    # -- header limit ----------------------------------------------------------------------------
    # Once over the limit the request is dropped from the parser's callbacks on (no cycle, no
    # app call) and data_received answers 431 when the parser returns.

    # Counted inline (one addition and one comparison per header): these run for every header
    # of every request.

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.limits.max_header_bytes:
            self._oversized = True
        if not self._oversized:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_bytes > self.limits.max_header_bytes:
            self._oversized = True
        if not self._oversized:
            super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        if not self._oversized:
            super().on_body(body)

    def _refuse_oversized_headers(self) -> None:
        self.counters.headers_too_large += 1
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_HEADERS_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        if self._oversized:
            return
        super().on_headers_complete()
        self._phase = _BODY
        self._phase_changed = True
        self._announced = _content_length(self.headers)
        if self.cycle is not None:
            self.cycle.transport = cast(asyncio.Transport, self._view)

    def on_message_complete(self) -> None:
        if self._oversized:
            return
        super().on_message_complete()
        self._phase = _DONE
        self._phase_changed = True

    def _deadline_for_phase(self) -> None:
        self._phase_changed = False
        if self._phase == _HEADERS:
            self._arm(self.limits.header_timeout_s)
        elif self._phase == _BODY:
            self._arm(body_deadline_s(self._announced, self.limits))
        else:
            self._disarm()

    # -- requests in progress ------------------------------------------------------------------

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # Counted when the task is created, not when it first runs: 32 requests read in one
        # pass of the loop are all counted before the first of them reaches the batcher.
        self.counters.active += 1
        counted = (
            self._counted_app
            if app is self.app
            else functools.partial(_counted, self.counters, app)
        )
        super()._start_asgi_task(cycle, counted)

    # -- lingering close -----------------------------------------------------------------------

    def close_lingering(self) -> None:
        """Close; if body bytes are still due, half-close and discard them first (bounded)."""
        if not self._body_due or self._lingering or self.transport.is_closing():
            self.transport.close()
            return
        self._lingering = True
        self._phase_changed = False  # the linger deadline below replaces the phase's
        self._arm(self.limits.linger_s)
        self.flow.resume_reading()
        try:
            self.transport.write_eof()  # the answer goes out, then FIN; reading goes on
        except (NotImplementedError, OSError, RuntimeError):
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._oversized:
            return  # refused; the connection is closing
        if not self._lingering:
            continuing = self._phase == _HEADERS
            super().data_received(data)
            if continuing and self._phase == _HEADERS:
                # The whole read lies inside one header block. (The first read of a block is
                # counted by the parser's callbacks only: at most one read's worth unseen.)
                self._header_bytes_raw += len(data)
                if self._header_bytes_raw > self.limits.max_header_bytes:
                    self._oversized = True
            if self._oversized:
                self._refuse_oversized_headers()
                return
            if self._phase_changed and not self._lingering:
                self._deadline_for_phase()
            return
        self._discarded += len(data)
        if self._discarded > self.limits.linger_bytes:
            self.transport.close()

    def on_response_complete(self) -> None:
        if self._lingering:  # no keep-alive, no pipelined request on a half-closed connection
            self.server_state.total_requests += 1
            return
        super().on_response_complete()

    def shutdown(self) -> None:
        """Graceful shutdown: a request still waiting for its body will not get it; drop it."""
        cycle = self.cycle
        waiting_for_body = self._body_due and cycle is not None and not cycle.response_started
        if self._lingering or waiting_for_body:
            self.transport.close()
            return
        super().shutdown()
