"""Domain errors. Each carries its HTTP status; the HTTP layer maps them to JSON in one place."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("probserve.errors")


class ProbserveError(Exception):
    """Base of every error the service reports to a caller."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready error body: a message plus structured details (instance, feature, ...)."""
        return {"error": self.message, "type": self.error_type, **self.details}


class UsageError(ProbserveError):
    """Bad command-line usage or bad input to an offline command (exit code 2)."""

    status_code = 400
    error_type = "usage_error"


class InvalidInput(ProbserveError):
    """A request whose payload does not match the model's inputs."""

    status_code = 400
    error_type = "invalid_input"


class ModelNotFound(ProbserveError):
    """Unknown model name or version."""

    status_code = 404
    error_type = "model_not_found"


class ModelNotReady(ProbserveError):
    """The model exists but is not loaded (yet)."""

    status_code = 503
    error_type = "model_not_ready"


class PayloadTooLarge(ProbserveError):
    """Body over the configured size limit."""

    status_code = 413
    error_type = "payload_too_large"


class Unauthorized(ProbserveError):
    """Missing or wrong bearer token on a model-control endpoint."""

    status_code = 401
    error_type = "unauthorized"


class Forbidden(ProbserveError):
    """Model control is disabled because no admin token is configured."""

    status_code = 403
    error_type = "forbidden"


class ModelLoadError(ProbserveError):
    """A bundle failed verification; the reason says which check."""

    status_code = 400
    error_type = "model_load_error"


class MethodNotAllowed(ProbserveError):
    """The path exists but not with this HTTP method."""

    status_code = 405
    error_type = "method_not_allowed"


class NotFound(ProbserveError):
    """No route answers this path."""

    status_code = 404
    error_type = "not_found"


class Overloaded(ProbserveError):
    """The model's queue is full: the request was refused at once, never queued (load shedding).

    ``retry_after_s`` (whole seconds, also in the details) is what the HTTP layer sends as
    ``Retry-After``.
    """

    status_code = 503
    error_type = "overloaded"
    #: Default Retry-After in seconds when the raiser does not name one.
    retry_after_s = 1

    def __init__(self, message: str, *, retry_after_s: int | None = None, **details: Any) -> None:
        seconds = type(self).retry_after_s if retry_after_s is None else retry_after_s
        super().__init__(message, retry_after_s=seconds, **details)
        self.retry_after_s = seconds


class DeadlineExceeded(ProbserveError):
    """The request waited in the model's queue past its deadline and was not computed."""

    status_code = 503
    error_type = "deadline_exceeded"


def internal_error(exc: BaseException, request_id: str, where: str) -> ProbserveError:
    """Log an unexpected exception with its traceback; return the bland error the caller sees."""
    logger.error(
        "unhandled error on %s (request %s)",
        where,
        request_id,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return ProbserveError(
        f"internal error; the server log has the details under request id {request_id}"
    )
