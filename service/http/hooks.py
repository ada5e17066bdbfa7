"""The hook point for request metrics: the lean front calls it around every hot-path request.

A metrics module subclasses :class:`RequestHooks` (or passes any object with these methods) and
hands it to :func:`service.http.create_app`; the default does nothing, so it costs two method
calls per request. Labels stay bounded: ``endpoint`` is a route name, never a path with ids.
"""

from __future__ import annotations


class RequestHooks:
    """No-op request observer; override what you need. Must not block or raise."""

    def request_started(self, endpoint: str) -> None:
        """A hot-path request began (for an in-flight gauge)."""

    def request_finished(
        self, endpoint: str, model: str, status: int, seconds: float, error_type: str | None
    ) -> None:
        """A hot-path request ended; ``model`` is "" when it never resolved one."""
