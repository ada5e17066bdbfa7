"""The lean ASGI front: serves the predict/infer hot paths itself, hands everything else on.

FastAPI's per-request machinery (routing, dependency injection, pydantic, response classes) costs
several times the model's own inference on a batch-1 request (docs/architecture.md, "Known
facts"), so the four hot routes are matched by hand here: split the path, read the body with the
size limit, then the shared handlers (codec, data plane, orjson). Any other request, any other
method on those paths, and the lifespan go to the FastAPI app unchanged.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.handlers import (
    ENDPOINT_V1,
    ENDPOINT_V2,
    Answer,
    infer_v2,
    predict_v1,
    too_large,
)
from service.http.ids import request_id_from_headers
from service.http.state import ServiceState
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

    def __init__(self, state: ServiceState, fallback: ASGIApp) -> None:
        self.state = state
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        if scope["method"] == "POST":
            route = match_hot_path(scope["path"])
            if route is not None:
                await self._serve(route, scope, receive, send)
                return
        await self._observed_fallback(scope, receive, send)

    async def _observed_fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every other route, timed for telemetry under its route name (bounded labels)."""
        telemetry = self.state.telemetry
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
        limit = self.state.settings.max_request_bytes
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        header_id = headers.get(b"x-request-id")
        request_id = request_id_from_headers(
            None if header_id is None else header_id.decode("latin-1")
        )
        v2 = scope["path"].startswith("/v2")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send(send, too_large(limit, request_id, v2=v2))
            return None
        try:
            body = await _read_body(receive, limit)
        except _ClientDisconnected:
            return None
        if body is None:
            await _send(send, too_large(limit, request_id, v2=v2))
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
        limit = self.state.settings.max_request_bytes
        # Refuse an announced oversize body before reading a byte of it.
        if length is not None and length.isdigit() and int(length) > limit:
            await self._too_large(send, protocol, limit, header_id)
            return
        try:
            body = await _read_body(receive, limit)
        except _ClientDisconnected:
            return  # nobody to answer
        if body is None:
            await self._too_large(send, protocol, limit, header_id)
            return
        if v2:
            answer = await infer_v2(self.state, name, version, body, header_id, header_length)
        else:
            answer = await predict_v1(self.state, name, version, body, header_id)
        await _send(send, answer)

    async def _too_large(
        self, send: Send, protocol: str, limit: int, header_id: str | None
    ) -> None:
        """Answer 413 on a hot path; telemetry counts it like any other answer."""
        started = time.perf_counter()
        endpoint = ENDPOINT_V2 if protocol == "v2" else ENDPOINT_V1
        answer = too_large(limit, request_id_from_headers(header_id), v2=protocol == "v2")
        telemetry = self.state.telemetry
        telemetry.request_started(endpoint)
        telemetry.request_finished(
            RequestDone(
                endpoint,
                protocol,
                "",
                None,
                answer.status,
                time.perf_counter() - started,
                answer.error_type,
            )
        )
        await _send(send, answer)


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
