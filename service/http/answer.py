"""A complete HTTP response as the lean front sends it, and the error answers it builds."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.errors import PayloadTooLarge, ProbserveError
from service.http.errors import JSON, error_body, error_headers


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete HTTP response."""

    status: int
    body: bytes
    request_id: str
    content_type: str = JSON
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """ASGI header list."""
        return [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            (b"x-request-id", self.request_id.encode()),
            *self.extra_headers,
        ]


def error_answer(exc: ProbserveError, request_id: str, *, v2: bool) -> Answer:
    """The response for a domain error."""
    extra = [(k.encode(), v.encode()) for k, v in error_headers(exc).items()]
    return Answer(exc.status_code, error_body(exc, request_id, v2=v2), request_id, JSON, extra)


def too_large(limit: int, request_id: str, *, v2: bool) -> Answer:
    """413 for a body over the limit; the connection closes (lingering) after it."""
    exc = PayloadTooLarge(f"request body over the limit of {limit} bytes", limit=limit)
    answer = error_answer(exc, request_id, v2=v2)
    # The rest of the body is never read: say so, and the server drains a bounded amount of it
    # before closing (service/http/protocol.py), so the client reads the 413 and not a reset.
    answer.extra_headers.append((b"connection", b"close"))
    return answer
