"""Each domain error's gRPC status: the one table, the public message, the trailers."""

from __future__ import annotations

import grpc
import pytest

from service.errors import (
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    ProbserveError,
    Unauthorized,
)
from service.grpc.status import grpc_error

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput("bad"), Code.INVALID_ARGUMENT),
        (ModelLoadError("bad bundle"), Code.INVALID_ARGUMENT),
        (Unauthorized("token"), Code.UNAUTHENTICATED),
        (Forbidden("off"), Code.PERMISSION_DENIED),
        (ModelNotFound("unknown"), Code.NOT_FOUND),
        (PayloadTooLarge("big"), Code.RESOURCE_EXHAUSTED),
        (ModelNotReady("loading"), Code.UNAVAILABLE),
        (Overloaded("full"), Code.UNAVAILABLE),
        (DeadlineExceeded("waited"), Code.DEADLINE_EXCEEDED),
        (ProbserveError("internal error; see the log"), Code.INTERNAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_each_error_has_its_status(error: ProbserveError, code: grpc.StatusCode) -> None:
    ending = grpc_error(error, "req-1")
    assert ending.code == code
    assert ending.message == error.message
    assert ("x-request-id", "req-1") in ending.trailers


def test_shedding_says_when_to_retry() -> None:
    ending = grpc_error(Overloaded("queue full", retry_after_s=3), "r")
    assert ending.trailers == (("x-request-id", "r"), ("retry-after", "3"))


def test_a_load_failure_never_shows_a_path_or_a_digest() -> None:
    digest = "ab" * 32
    error = ModelNotReady(f"model 'm' version 2 failed: /srv/models/m/2/model.onnx sha256 {digest}")
    ending = grpc_error(error, "r")
    assert ending.message == "model 'm' version 2 failed: model.onnx sha256 <sha256>"
