"""The one telemetry interface: what the server reports, and the no-op base every sink extends.

The composition root (``service.server``) builds one :class:`Telemetry` from the settings
(``build_telemetry``) and hands it to every part that has something to report: the request
pipeline (requests, predictions), the HTTP front (its other routes), the batchers (ONNX calls,
shed requests) and the registry (model events). Metrics and the
prediction log are sinks behind it; tests subclass it to watch (docs/architecture.md,
"Telemetry seam"). Every method is called on the request path or a worker thread: it must be
cheap, must not block and must not raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.batching import BatchStats, ShedStats
from service.types import ModelHandle, Prediction

if TYPE_CHECKING:
    from service.predlog import FeedbackCounts, FeedbackLabel


@dataclass(frozen=True, slots=True)
class RequestDone:
    """One finished request, on any route of any protocol."""

    endpoint: str  # a route name (bounded), never a path with ids
    protocol: str  # "v1", "v2", "grpc", or "" for routes of no inference protocol
    model: str  # "" when the request resolved no model
    version: int | None
    status: int
    seconds: float
    error_type: str | None  # the domain error's type, None on success


class Telemetry:
    """No-op telemetry; sinks override what they need."""

    def request_started(self, endpoint: str) -> None:
        """A request began (for the in-flight gauge)."""

    def request_finished(self, done: RequestDone) -> None:
        """A request ended, successfully or not."""

    def prediction_served(self, prediction: Prediction) -> None:
        """Predictions were computed for one request (metrics, prediction log)."""

    def explained(self, handle: ModelHandle, rows: int, seconds: float) -> None:
        """An explain request's rows were explained in ``seconds`` (queue wait included)."""

    def batch_ran(self, stats: BatchStats) -> None:
        """One ONNX call finished (batch size, queue wait, inference time); on the worker
        thread, or on the event loop when the idle fast path ran it there."""

    def requests_shed(self, stats: ShedStats) -> None:
        """Requests were refused by load shedding (overloaded, or past their deadline)."""

    def model_loaded(self, handle: ModelHandle) -> None:
        """A model version now serves."""

    def model_refused(self, name: str, version: int, reason: str) -> None:
        """A model version failed to load or verify."""

    def conformal_adopted(self, handle: ModelHandle, revision: int) -> None:
        """A served version's sets now come from another conformal revision (0: the bundle's)."""

    def model_unloaded(self, name: str, version: int) -> None:
        """A model version stopped serving."""

    def render_metrics(self) -> tuple[bytes, str] | None:
        """The Prometheus exposition and its content type; None when metrics are off."""
        return None

    async def record_feedback(
        self, model: str, labels: Sequence[FeedbackLabel], classes: Sequence[str]
    ) -> FeedbackCounts | None:
        """Store ground truth against logged predictions; None when there is no log."""
        return None

    async def start(self) -> None:
        """Open what the sinks need (the prediction log's database)."""

    async def stop(self) -> None:
        """Flush and close (the prediction log drains its queue)."""
