"""The drift job's window of the log: one DataFrame row per logged instance.

Columns: the scalar prediction columns (BASE_COLUMNS), one column per feature (numeric ->
float64 with NaN, categorical -> object str with None), one per class probability named like
the bundle's reference (REFERENCE_PROBABILITY_PREFIX + class), and ``true_label`` from the
feedback labels (None without one; the latest label of a prediction wins). ``frame.attrs
["feedback"]`` counts labels ``matched`` to a row of the window and ``unmatched`` ones.

The window itself comes from ``service.predlog.window`` as Arrow tables (docs/architecture.md,
"Prediction log").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from service.bundle.manifest import REFERENCE_PROBABILITY_PREFIX
from service.predlog.errors import PredictionLogError
from service.predlog.layout import FEATURE_PREFIX, PROBABILITY_PREFIX, Columns, SchemaTooNew
from service.predlog.urls import parse_log_url
from service.predlog.window import read_feedback, read_parts

BASE_COLUMNS = (
    "logged_at",
    "request_id",
    "instance",
    "model",
    "version",
    "protocol",
    "confidence_level",
    "label",
    "interval_width",
    "set_size",
    "latency_s",
)
TRUE_LABEL = "true_label"

FeatureType = Literal["numeric", "categorical"]


def read_window(
    url: str,
    model: str,
    *,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    last: int | None = None,
    feature_types: Mapping[str, FeatureType] | None = None,
) -> pd.DataFrame:
    """Logged predictions of ``model`` (``since`` <= logged_at < ``until``, the newest
    ``last``), oldest first. Without ``feature_types`` a version's own layout says which
    features are numeric. ValueError (one line) when the log cannot be read."""
    location = parse_log_url(url)
    if location is None:
        raise ValueError("the prediction log is off (URL 'none'): there is nothing to read")
    if last is not None and last < 1:
        raise ValueError("last must be at least 1")
    try:
        parts = read_parts(url, model, version=version, since=since, until=until, last=last)
        feedback = read_feedback(url, model).to_pandas()
    except SchemaTooNew as exc:
        raise ValueError(str(exc)) from exc
    except (pa.ArrowException, OSError, PredictionLogError) as exc:
        raise ValueError(f"the prediction log cannot be read: {_first_line(exc)}") from exc
    frames = [_frame(model, v, columns, table, feature_types) for v, columns, table in parts]
    if frames:
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        frame = frame.sort_values(["logged_at", "instance"], kind="stable", ignore_index=True)
        if last is not None and len(frame) > last:
            frame = frame.iloc[len(frame) - last :].reset_index(drop=True)
    else:
        frame = _frame(model, 0, Columns((), ()), pa.table({}), feature_types)
    return _join_feedback(frame, feedback, since)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- one frame ----------------------------------------------------------------------------------


def _frame(
    model: str,
    version: int,
    columns: Columns,
    table: pa.Table,
    feature_types: Mapping[str, FeatureType] | None,
) -> pd.DataFrame:
    n = table.num_rows
    data: dict[str, Any] = {}
    for name in BASE_COLUMNS:
        if name == "model":
            data[name] = pd.Series([model] * n, dtype=object)
        elif name == "version":
            data[name] = np.full(n, version, dtype=np.int64)
        elif name in ("instance", "set_size"):
            data[name] = _numbers(table, name, n).astype(np.int64)
        elif name in ("logged_at", "confidence_level", "interval_width", "latency_s"):
            data[name] = _numbers(table, name, n)
        else:
            data[name] = _texts(table, name, n)
    own = dict(columns.features)
    names = list(feature_types) if feature_types is not None else list(own)
    for name in names:
        if name in data or name == TRUE_LABEL:
            raise ValueError(f"feature {name!r} has the name of a prediction-log column")
        kind = feature_types[name] if feature_types is not None else own[name]
        column = FEATURE_PREFIX + name
        if kind == "numeric":
            data[name] = _numbers(table, column, n)
        else:
            data[name] = _texts(table, column, n)
    for label in columns.classes:
        data[f"{REFERENCE_PROBABILITY_PREFIX}{label}"] = _numbers(
            table, PROBABILITY_PREFIX + label, n
        )
    return pd.DataFrame(data)


def _numbers(table: pa.Table, name: str, n: int) -> Any:
    """A column as float64 (null -> NaN); a text column's numbers parsed, the rest NaN."""
    if name not in table.column_names:
        return np.full(n, np.nan)
    column = table[name]
    if pa.types.is_string(column.type):
        return pd.to_numeric(pd.Series(column.to_pylist(), dtype=object), errors="coerce").astype(
            np.float64
        )
    return column.to_numpy(zero_copy_only=False).astype(np.float64)


def _texts(table: pa.Table, name: str, n: int) -> pd.Series:
    """A column as object strings with None for missing (numbers become their text)."""
    if name not in table.column_names:
        return pd.Series([None] * n, dtype=object)
    column = table[name]
    if not pa.types.is_string(column.type):
        values = column.to_pylist()
        return pd.Series([None if v is None else str(v) for v in values], dtype=object)
    # Arrow builds the object array in C++ and reuses one Python string per distinct value
    # (deduplicate_objects): a 1M-row window of a few categories is a few objects, not 1M.
    series: pd.Series = column.to_pandas(deduplicate_objects=True)
    return series.astype(object).where(series.notna(), None)


def _join_feedback(
    frame: pd.DataFrame, feedback: pd.DataFrame, since: float | None
) -> pd.DataFrame:
    """``true_label`` from the latest label of each (request_id, instance); counts in attrs."""
    labels = feedback.sort_values("received_at", kind="stable").drop_duplicates(
        ["request_id", "instance"], keep="last"
    )
    keys = ["request_id", "instance"]
    if frame.empty or labels.empty:
        frame[TRUE_LABEL] = pd.Series([None] * len(frame), dtype=object)
        matched = 0
    else:
        right = labels[[*keys, "label"]].rename(columns={"label": TRUE_LABEL})
        right = right.astype({"instance": np.int64})
        frame = frame.merge(right, on=keys, how="left", sort=False)
        frame[TRUE_LABEL] = frame[TRUE_LABEL].astype(object).where(frame[TRUE_LABEL].notna(), None)
        matched = int(frame[TRUE_LABEL].notna().sum())
    recent = labels if since is None else labels[labels["received_at"] >= since]
    frame.attrs["feedback"] = {"matched": matched, "unmatched": max(0, len(recent) - matched)}
    return frame
