"""Telemetry: one interface the server reports to; metrics and the prediction log behind it."""

from service.telemetry.events import RequestDone, Telemetry

__all__ = ["RequestDone", "Telemetry"]
