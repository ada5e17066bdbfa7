"""The durable prediction log: request arrays in, Arrow batches out to Parquet or PostgreSQL.

docs/architecture.md, "Prediction log".
"""

from service.predlog.errors import PredictionLogError
from service.predlog.layout import SCHEMA_VERSION
from service.predlog.record import FeedbackCounts, FeedbackLabel, PredictionRecord
from service.predlog.urls import LogLocation, parse_log_url
from service.predlog.writer import PredictionLog

# read_window lives in service.predlog.reader: it needs pandas and pyarrow.dataset, which the
# serving process must not import just to log (about 120 MiB of RSS). The drift job imports it.
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
