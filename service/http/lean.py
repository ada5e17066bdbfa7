"""The lean ASGI front: serves the predict/infer hot paths itself, hands everything else on.

FastAPI's per-request machinery (routing, dependency injection, pydantic, response classes) costs
several times the model's own inference on a batch-1 request (docs/architecture.md, "Known
facts"), so the four hot routes are matched by hand here: split the path, read the body with the
size limit, then the request pipeline with the protocol's codec. Any other request, any other
method on those paths, and the lifespan go to the FastAPI app, every body held to the same limit
by the one body reader here. The OpenAPI document describes the hot routes (service/http/docs.py).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import MethodNotAllowed, PayloadTooLarge
from service.http.answer import Answer, error_answer, too_large
from service.http.codecs import ENDPOINT_V1, ENDPOINT_V2, NATIVE, V2, V2Body
from service.request_ids import request_id_from_headers
from service.server import Server
from service.telemetry import RequestDone

#: The endpoint label of a request that matched no route.
FALLBACK_ENDPOINT = "other"


def match_hot_path(path: str) -> tuple[str, str, str | None] | None:
    """``(protocol, model name, version or None)`` for a predict/infer path, else ``None``."""
    parts = path.split("/")
    n = len(parts)
    if n not in (5, 7) or parts[0] or parts[2] != "models" or not parts[3]:
        return None
    protocol, last = parts[1], parts[-1]
    if not ((protocol == "v1" and last == "predict") or (protocol == "v2" and last == "infer")):
        return None
    if n == 5:
        return protocol, parts[3], None
    if parts[4] != "versions" or not parts[5]:
        return None
    return protocol, parts[3], parts[5]


class LeanApp:
    """The outermost ASGI app that uvicorn runs."""

    def __init__(self, server: Server, fallback: ASGIApp) -> None:
        self.server = server
        self.fallback = fallback
        #: Found by the HTTP protocol below (service.http.connections.counters_of).
        self.counters = server.connections
        self._limit = server.settings.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        route = match_hot_path(scope["path"])
        if route is not None and scope["method"] == "POST":
            await self._serve(route, scope, receive, send)
            return
        await self._observed_fallback(scope, receive, send, hot=route is not None)

    async def _observed_fallback(
        self, scope: Scope, receive: Receive, send: Send, *, hot: bool = False
    ) -> None:
        """Every other route, timed for telemetry under its route name (bounded labels);
        ``hot``: a hot path with a method other than POST, answered 405 here."""
        telemetry = self.server.telemetry
        started = time.perf_counter()
        status = 500  # what the client sees if the app dies before answering

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        telemetry.request_started(FALLBACK_ENDPOINT)
        try:
            if scope["method"] in _BODY_METHODS:
                # FastAPI would read any body whole: hold every route to the same size limit.
                limited = await self._limited_body(scope, receive, send_observed)
                if limited is None:
                    return
                receive = limited
            if hot:
                await _send(send_observed, _method_not_allowed(scope))
            else:
                await self.fallback(scope, receive, send_observed)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "name", None) or FALLBACK_ENDPOINT
            path: str = scope["path"]
            protocol = "v1" if path.startswith("/v1/") else "v2" if path.startswith("/v2") else ""
            telemetry.request_finished(
                RequestDone(
                    endpoint,
                    protocol,
                    "",
                    None,
                    status,
                    time.perf_counter() - started,
                    None,
                )
            )

    async def _limited_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """A receive that replays the body read under the limit; None once 413 was sent."""
        length, header_id, _ = _headers(scope)
        v2 = scope["path"].startswith("/v2")
        body = await self._read(receive, send, length, header_id, v2=v2, endpoint=None)
        if body is None:
            return None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only a disconnect can come
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _serve(
        self, route: tuple[str, str, str | None], scope: Scope, receive: Receive, send: Send
    ) -> None:
        protocol, name, version = route
        v2 = protocol == "v2"
        length, header_id, header_length = _headers(scope)
        endpoint = ENDPOINT_V2 if v2 else ENDPOINT_V1
        body = await self._read(receive, send, length, header_id, v2=v2, endpoint=endpoint)
        if body is None:
            return
        pipeline = self.server.pipeline
        if v2:
            answer = await pipeline.run(V2, name, version, V2Body(body, header_length), header_id)
        else:
            answer = await pipeline.run(NATIVE, name, version, body, header_id)
        await _send(send, answer)

    async def _read(
        self,
        receive: Receive,
        send: Send,
        length: bytes | None,
        header_id: str | None,
        *,
        v2: bool,
        endpoint: str | None,
    ) -> bytes | None:
        """The one body reader: the body, or None once 413 was sent or the client left.

        An announced oversize body is refused before a byte of it is read. ``endpoint`` names
        a hot route, whose 413 telemetry counts here (the fallback's counts in its own timing).
        """
        limit = self._limit
        if length is None or not length.isdigit() or int(length) <= limit:
            try:
                body = await _read_body(receive, limit)
            except _ClientDisconnected:
                return None  # nobody to answer
            if body is not None:
                return body
        started = time.perf_counter()  # only a refusal is timed here: the pipeline times the rest
        answer = too_large(limit, request_id_from_headers(header_id), v2=v2)
        if endpoint is not None:
            telemetry = self.server.telemetry
            telemetry.request_started(endpoint)
            telemetry.request_finished(
                RequestDone(
                    endpoint,
                    "v2" if v2 else "v1",
                    "",
                    None,
                    answer.status,
                    time.perf_counter() - started,
                    PayloadTooLarge.error_type,
                )
            )
        await _send(send, answer)
        return None


def _method_not_allowed(scope: Scope) -> Answer:
    """405 for a hot path asked with another method (Allow names POST, RFC 9110)."""
    path: str = scope["path"]
    exc = MethodNotAllowed(f"{scope['method']} is not allowed on {path}")
    _, header_id, _ = _headers(scope)
    answer = error_answer(exc, request_id_from_headers(header_id), v2=path.startswith("/v2"))
    answer.extra_headers.append((b"allow", b"POST"))
    return answer


def _headers(scope: Scope) -> tuple[bytes | None, str | None, str | None]:
    """Content-Length, X-Request-ID and Inference-Header-Content-Length, as sent."""
    length: bytes | None = None
    header_id: str | None = None
    header_length: str | None = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            length = value
        elif key == b"x-request-id":
            header_id = value.decode("latin-1")
        elif key == b"inference-header-content-length":
            header_length = value.decode("latin-1")
    return length, header_id, header_length


#: Methods whose body the FastAPI routes would read.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _ClientDisconnected(Exception):
    """The client went away before sending the whole body."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it passes ``limit`` (the rest is never read)."""
    message: Message = await receive()
    if message["type"] != "http.request":
        raise _ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the common case: one message holds it all
        return None if len(body) > limit else body
    parts = [body]
    size = len(body)
    while True:
        if size > limit:
            return None
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientDisconnected
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return None if size > limit else b"".join(parts)


async def _send(send: Send, answer: Answer) -> None:
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": answer.raw_headers()}
    )
    await send({"type": "http.response.body", "body": answer.body})
