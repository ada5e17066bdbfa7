"""What the HTTP protocol counts below the app: requests held now, and connection faults.

The HTTP protocol counts them (``service.http_protocol``). The batcher's idle fast path reads the
requests held to tell a lone request, which may run at once, from one that others may join
(docs/architecture.md, "Request path"); telemetry folds the faults into
``probserve_errors_total`` at each scrape. Stdlib only: spawned workers import it early.
"""

from __future__ import annotations


class RequestCount:
    """A counter touched only on the event loop's thread."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = 0


#: This process's requests handed to the app and not finished yet. It stays 0 where the
#: hardened protocol does not serve (an app driven in-process, another server).
ACTIVE_REQUESTS = RequestCount()


class ConnectionFaults:
    """Counts of what clients did to a connection; touched only on the event loop's thread."""

    __slots__ = ("client_gone", "headers_too_large")

    def __init__(self) -> None:
        #: Answers (or parts of one) with nowhere to go: the client had closed the connection.
        self.client_gone = 0
        #: Requests refused 431 because their header block passed ``max_header_bytes``.
        self.headers_too_large = 0


#: This process's connection faults since start (telemetry folds the increase into a counter).
CONNECTION_FAULTS = ConnectionFaults()
