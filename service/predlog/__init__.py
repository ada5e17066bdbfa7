"""The durable prediction log: one row per served instance, feedback labels, the drift window.

docs/architecture.md, "Telemetry seam".
"""

from service.predlog.errors import PredictionLogError
from service.predlog.reader import read_window
from service.predlog.record import FeedbackCounts, FeedbackLabel, PredictionRecord
from service.predlog.schema import SCHEMA_VERSION
from service.predlog.urls import LogLocation, parse_log_url
from service.predlog.writer import PredictionLog

__all__ = [
    "SCHEMA_VERSION",
    "FeedbackCounts",
    "FeedbackLabel",
    "LogLocation",
    "PredictionLog",
    "PredictionLogError",
    "PredictionRecord",
    "parse_log_url",
    "read_window",
]
