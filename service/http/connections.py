"""What the HTTP protocol counts below the app: requests held now, and connection faults.

One :class:`ConnectionCounters` per process, owned by the server (``service.server``). The
protocol finds it through the app it serves (:func:`counters_of`), the batcher's idle fast path
reads the requests held to tell a lone request, which may run at once, from one that others may
join (docs/architecture.md, "Request path"), and telemetry folds the faults into
``probserve_errors_total``. Stdlib only: spawned workers import it before the app.
"""

from __future__ import annotations

from typing import Any


class ConnectionCounters:
    """Counts touched only on the event loop's thread."""

    __slots__ = ("active", "client_gone", "headers_too_large")

    def __init__(self) -> None:
        #: Requests handed to the app, or to the gRPC servicer, and not finished yet.
        self.active = 0
        #: Answers (or parts of one) with nowhere to go: the client had closed the connection.
        self.client_gone = 0
        #: Requests refused 431 because their header block passed ``max_header_bytes``.
        self.headers_too_large = 0


def counters_of(app: Any) -> ConnectionCounters:
    """The counters of the probserve app inside ``app`` (uvicorn may wrap it in middleware);
    fresh ones, which nothing else reads, for any other app."""
    for _ in range(8):  # uvicorn wraps at most a couple of middlewares
        counters = getattr(app, "counters", None)
        if isinstance(counters, ConnectionCounters):
            return counters
        app = getattr(app, "app", None)
        if app is None:
            break
    return ConnectionCounters()
