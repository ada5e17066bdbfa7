"""Telemetry: one interface the server reports to; metrics and the prediction log behind it."""

from service.telemetry.events import PredictionServed, RequestDone, Telemetry

__all__ = ["PredictionServed", "RequestDone", "Telemetry"]
