"""Build the server's telemetry from its settings: the one place metrics and the log are wired."""

from __future__ import annotations

from service.http.connections import ConnectionCounters
from service.settings import Settings
from service.telemetry.metrics import ServiceMetrics
from service.telemetry.recorder import ServiceTelemetry


def build_telemetry(
    settings: Settings, connections: ConnectionCounters | None = None
) -> ServiceTelemetry:
    """Metrics when ``metrics`` is on, the prediction log unless its URL is ``none``."""
    from service.predlog.urls import parse_log_url

    metrics = ServiceMetrics() if settings.metrics else None
    telemetry = ServiceTelemetry(
        metrics, sample_rate=settings.prediction_log_sample_rate, connections=connections
    )
    url = settings.prediction_log_url
    if parse_log_url(url) is not None:
        from service.predlog import PredictionLog

        telemetry.prediction_log = PredictionLog(
            url,
            queue_rows=settings.prediction_log_queue_rows,
            spool_dir=settings.prediction_log_spool_dir,
            flush_interval_s=settings.prediction_log_flush_seconds,
            segment_rows=settings.prediction_log_segment_rows,
            segment_age_s=settings.prediction_log_segment_seconds,
            retention_days=settings.prediction_log_retention_days or None,
            on_rows=telemetry.count_log_rows,
        )
    return telemetry
