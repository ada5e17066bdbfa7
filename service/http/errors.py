"""The one place errors become HTTP responses, for the lean front and for FastAPI alike.

Native (v1 and everything that is not V2) error bodies are :meth:`ProbserveError.to_dict` plus
the request id; V2 bodies are ``{"error": "..."}`` as Triton sends them, so stock V2 clients show
the message. Unexpected exceptions become a 500 whose body carries only a request id; the
traceback goes to the server log under the same id, never to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    ProbserveError,
    internal_error,
)
from service.http.public import public_message
from service.request_ids import request_id_from_headers

logger = logging.getLogger("probserve.http")

JSON = "application/json"


def is_v2_path(path: str) -> bool:
    """Whether a path belongs to the Open Inference Protocol (Triton-shaped errors)."""
    return path == "/v2" or path.startswith("/v2/")


def error_body(exc: ProbserveError, request_id: str, *, v2: bool) -> bytes:
    """Serialise a domain error in the protocol's error shape (no paths or digests in it)."""
    message = public_message(exc)
    if v2:
        return orjson.dumps({"error": message})
    body: dict[str, Any] = exc.to_dict()
    body["error"] = message
    body["request_id"] = request_id
    return orjson.dumps(body)


def error_headers(exc: ProbserveError) -> dict[str, str]:
    """Headers an error answer carries: the challenge on 401, Retry-After when shedding load."""
    headers: dict[str, str] = {}
    if exc.status_code == 401:
        headers["www-authenticate"] = "Bearer"
    if isinstance(exc, Overloaded):
        headers["retry-after"] = str(exc.retry_after_s)
    return headers


def _response(
    exc: ProbserveError, request: Request, extra: Mapping[str, str] | None = None
) -> Response:
    request_id = request_id_from_headers(request.headers.get("x-request-id"))
    headers = {**(extra or {}), **error_headers(exc), "x-request-id": request_id}
    return Response(
        error_body(exc, request_id, v2=is_v2_path(request.url.path)),
        status_code=exc.status_code,
        media_type=JSON,
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, FastAPI's validation errors, 404/405 and crashes to one JSON shape."""

    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProbserveError)
        return _response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        # 400 like the codecs, not FastAPI's 422: one status for bad input, whichever path.
        return _response(InvalidInput(message, field=where), request)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        err: ProbserveError
        if exc.status_code == 404:
            err = NotFound(f"no route for {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            err = ProbserveError(str(exc.detail))
            err.status_code = exc.status_code
        # Starlette's 405 names the allowed methods in an Allow header (RFC 9110): keep it.
        allow = (exc.headers or {}).get("Allow")
        return _response(err, request, {"allow": allow} if allow else None)

    async def on_crash(request: Request, exc: Exception) -> Response:
        request_id = request_id_from_headers(request.headers.get("x-request-id"))
        err = internal_error(exc, request_id, request.url.path)
        return Response(
            error_body(err, request_id, v2=is_v2_path(request.url.path)),
            status_code=500,
            media_type=JSON,
            headers={"x-request-id": request_id},
        )

    app.add_exception_handler(ProbserveError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)
