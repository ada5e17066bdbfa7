"""Requests the HTTP server holds right now, across all its connections.

The HTTP protocol counts them (``service.http_protocol``); the batcher's idle fast path reads the
figure to tell a lone request, which may run at once, from one that others may join
(docs/architecture.md, "Request path"). Stdlib only: spawned workers import it early.
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
