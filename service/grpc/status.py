"""The one mapping of domain errors to gRPC status codes, and the error a gRPC call ends with."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from service.errors import DeadlineExceeded, Overloaded, ProbserveError
from service.http.public import public_message

#: Each error's HTTP status as its gRPC code (the Open Inference Protocol's own table);
#: anything else, 500 included, is INTERNAL.
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class GrpcError:
    """How a call ends when it fails: a status code, a public message and trailing metadata."""

    code: grpc.StatusCode
    message: str
    trailers: tuple[tuple[str, str], ...]


def grpc_error(exc: ProbserveError, request_id: str) -> GrpcError:
    """The gRPC ending of a domain error: never a path, a digest or a traceback in it."""
    # A request that waited past max_queue_wait_s is 503 over HTTP; gRPC has its own code.
    if isinstance(exc, DeadlineExceeded):
        code = grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        code = STATUS_CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)
    trailers: tuple[tuple[str, str], ...] = (("x-request-id", request_id),)
    if isinstance(exc, Overloaded):
        trailers += (("retry-after", str(exc.retry_after_s)),)
    return GrpcError(code, public_message(exc), trailers)
