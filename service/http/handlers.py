"""The hot-path handlers, shared by the lean ASGI front and the documented FastAPI routes.

Each takes the raw body and a few header values and always returns an :class:`Answer` (errors
included), so both callers send byte-identical responses and telemetry sees every request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson

from service.codecs.columns import load_json
from service.codecs.records import decode_predict_request, encode_predict_response
from service.codecs.v2 import decode_infer_request, encode_infer_response
from service.errors import ModelNotFound, PayloadTooLarge, ProbserveError
from service.http.errors import JSON, error_body, error_headers, internal_error
from service.http.ids import new_request_id, request_id_from_headers, usable_request_id
from service.http.state import ServiceState
from service.telemetry import RequestDone

ENDPOINT_V1 = "v1_predict"
ENDPOINT_V2 = "v2_infer"


@dataclass(frozen=True)
class Answer:
    """A complete HTTP response."""

    status: int
    body: bytes
    request_id: str
    content_type: str = JSON
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: The domain error's type for metrics (bounded set), None on success.
    error_type: str | None = None

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """ASGI header list."""
        return [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            (b"x-request-id", self.request_id.encode()),
            *self.extra_headers,
        ]


def parse_version(name: str, version: str | None) -> int | None:
    """A URL version segment as a positive integer; anything else names no version (404)."""
    if version is None:
        return None
    if version.isascii() and version.isdigit() and int(version) > 0:
        return int(version)
    raise ModelNotFound(
        f"model {name!r} has no version {version!r}: versions are positive integers",
        model=name,
        version=version,
    )


def error_answer(exc: ProbserveError, request_id: str, *, v2: bool) -> Answer:
    """The response for a domain error."""
    extra = [(k.encode(), v.encode()) for k, v in error_headers(exc).items()]
    body = error_body(exc, request_id, v2=v2)
    return Answer(exc.status_code, body, request_id, JSON, extra, exc.error_type)


def too_large(limit: int, request_id: str, *, v2: bool) -> Answer:
    """413 for a body over the limit; the connection closes (lingering) after it."""
    exc = PayloadTooLarge(f"request body over the limit of {limit} bytes", limit=limit)
    answer = error_answer(exc, request_id, v2=v2)
    # The rest of the body is never read: say so, and the server drains a bounded amount of it
    # before closing (service/http_protocol.py), so the client reads the 413 and not a reset.
    answer.extra_headers.append((b"connection", b"close"))
    return answer


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or ``None`` as soon as it grows past ``limit`` (nothing more is read)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def predict_v1(
    state: ServiceState, name: str, version: str | None, body: bytes, header_id: str | None
) -> Answer:
    """``POST /v1/models/{name}[/versions/{v}]/predict``."""
    request_id = request_id_from_headers(header_id)
    telemetry = state.telemetry
    telemetry.request_started(ENDPOINT_V1)
    started = time.perf_counter()
    model = ""
    served_version: int | None = None
    try:
        dataplane = state.dataplane
        handle = dataplane.resolve(name, parse_version(name, version))
        model, served_version = handle.name, handle.version
        payload = load_json(body)
        batch, level = decode_predict_request(
            payload,
            handle.manifest,
            max_rows=state.settings.max_rows_per_request,
            default_level=state.settings.confidence_level,
        )
        result = await dataplane.infer(
            handle, batch, level, request_id=request_id, protocol="v1", started=started
        )
        answer = Answer(200, orjson.dumps(encode_predict_response(result, request_id)), request_id)
    except ProbserveError as exc:
        answer = error_answer(exc, request_id, v2=False)
    except Exception as exc:  # a bug: never a traceback to the caller
        answer = error_answer(internal_error(exc, request_id, ENDPOINT_V1), request_id, v2=False)
    telemetry.request_finished(
        RequestDone(
            ENDPOINT_V1,
            "v1",
            model,
            served_version,
            answer.status,
            time.perf_counter() - started,
            answer.error_type,
        )
    )
    return answer


async def infer_v2(
    state: ServiceState,
    name: str,
    version: str | None,
    body: bytes,
    header_id: str | None,
    header_length: str | None,
) -> Answer:
    """``POST /v2/models/{name}[/versions/{v}]/infer`` (JSON or binary tensor extension)."""
    telemetry = state.telemetry
    telemetry.request_started(ENDPOINT_V2)
    started = time.perf_counter()
    request_id = request_id_from_headers(header_id)
    model = ""
    served_version: int | None = None
    try:
        dataplane = state.dataplane
        handle = dataplane.resolve(name, parse_version(name, version))
        model, served_version = handle.name, handle.version
        request = decode_infer_request(
            body,
            header_length,
            handle.manifest,
            max_rows=state.settings.max_rows_per_request,
            default_level=state.settings.confidence_level,
        )
        # The V2 body's id wins (clients match responses by it) when it passes the header rule
        # (ids.py), else the header's, else a new one; the JSON body echoes it as sent.
        request_id = usable_request_id(request.request_id) or request_id
        result = await dataplane.infer(
            handle,
            request.batch,
            request.confidence_level,
            request_id=request_id,
            protocol="v2",
            started=started,
        )
        out, json_length = encode_infer_response(result, request, request.request_id or request_id)
        if json_length is None:
            answer = Answer(200, out, request_id)
        else:
            answer = Answer(
                200,
                out,
                request_id,
                "application/octet-stream",
                [(b"inference-header-content-length", str(json_length).encode())],
            )
    except ProbserveError as exc:
        request_id = request_id or new_request_id()
        answer = error_answer(exc, request_id, v2=True)
    except Exception as exc:
        request_id = request_id or new_request_id()
        answer = error_answer(internal_error(exc, request_id, ENDPOINT_V2), request_id, v2=True)
    telemetry.request_finished(
        RequestDone(
            ENDPOINT_V2,
            "v2",
            model,
            served_version,
            answer.status,
            time.perf_counter() - started,
            answer.error_type,
        )
    )
    return answer
