"""The durable prediction log: one row per served instance, feedback labels, the drift window.

docs/architecture.md, "Telemetry seam".
"""

from service.predlog.errors import PredictionLogError
from service.predlog.record import FeedbackCounts, FeedbackLabel, PredictionRecord
from service.predlog.schema import SCHEMA_VERSION
from service.predlog.urls import LogLocation, parse_log_url
from service.predlog.writer import PredictionLog

# read_window lives in service.predlog.reader: it needs pandas, which the serving process must
# not import just to log (about 70 MiB of RSS). The drift job imports it from there.
__all__ = [
    "SCHEMA_VERSION",
    "FeedbackCounts",
    "FeedbackLabel",
    "LogLocation",
    "PredictionLog",
    "PredictionLogError",
    "PredictionRecord",
    "parse_log_url",
]
