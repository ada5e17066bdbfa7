"""The drift job's window of the log: one DataFrame row per logged instance.

Columns: the scalar prediction columns (BASE_COLUMNS), one column per feature (numeric ->
float64 with NaN, categorical -> object str with None), one per class probability named like
the bundle's reference (REFERENCE_PROBABILITY_PREFIX + class), and ``true_label`` from the
feedback labels (None without one; the latest label of a prediction wins). ``frame.attrs
["feedback"]`` counts labels ``matched`` to a row of the window and ``unmatched`` ones.

``compact=True`` (the drift job's window) keeps a numeric feature logged as float32 in float32
(NaN for missing) and gives a categorical feature as a pandas Categorical (NaN for missing):
the same values in under half the memory of a 1M-row window.

The window itself comes from ``service.predlog.window`` as Arrow tables (docs/architecture.md,
"Prediction log").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from service.bundle.manifest import REFERENCE_PROBABILITY_PREFIX
from service.predlog.errors import PredictionLogError, first_line
from service.predlog.layout import (
    FEATURE_PREFIX,
    LOWER_PREFIX,
    PROBABILITY_PREFIX,
    UPPER_PREFIX,
    Columns,
    SchemaTooNew,
    context_column,
)
from service.predlog.urls import LOG_OFF, parse_log_url
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
#: Log columns the window has no column for: left in the files, never decoded.
_UNREAD = (LOWER_PREFIX, UPPER_PREFIX)

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
    compact: bool = False,
) -> pd.DataFrame:
    """Logged predictions of ``model`` (``since`` <= logged_at < ``until``, the newest
    ``last``), oldest first. Without ``feature_types`` a version's own layout says which
    features are numeric; ``compact`` narrows the feature columns (module doc). ValueError
    (one line) when the log cannot be read."""
    location = parse_log_url(url)
    if location is None:
        raise ValueError(LOG_OFF)
    if last is not None and last < 1:
        raise ValueError("last must be at least 1")
    try:
        parts = read_parts(
            url, model, version=version, since=since, until=until, last=last, skip=_UNREAD
        )
        feedback = read_feedback(url, model).to_pandas()
    except SchemaTooNew as exc:
        raise ValueError(str(exc)) from exc
    except (pa.ArrowException, OSError, PredictionLogError) as exc:
        raise ValueError(f"the prediction log cannot be read: {first_line(exc)}") from exc
    frames = []
    while parts:  # each table is let go as soon as it is a frame (a window may be 1M rows)
        version_of, columns_of, table_of = parts.pop(0)
        held = [table_of]
        del table_of
        frames.append(_frame(model, version_of, columns_of, held, feature_types, compact))
    if frames:
        frame = (
            pd.concat(_same_categories(frames), ignore_index=True) if len(frames) > 1 else frames[0]
        )
        if not _in_order(frame):  # sorting copies the whole window: only when needed
            frame = frame.sort_values(["logged_at", "instance"], kind="stable", ignore_index=True)
        if last is not None and len(frame) > last:
            frame = frame.iloc[len(frame) - last :].reset_index(drop=True)
    else:
        frame = _frame(model, 0, Columns((), ()), [pa.table({})], feature_types, compact)
    # The allocator keeps what reading and converting freed (hundreds of MiB for a 1M-row
    # window) unless told to give it back; the drift job's peak is what follows.
    pa.default_memory_pool().release_unused()
    return _join_feedback(frame, feedback, since)


def _same_categories(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The frames with each Categorical column over the union of their categories: pandas
    concatenates Categoricals of different categories into an object column."""
    for name in frames[0].columns:
        if not all(isinstance(f[name].dtype, pd.CategoricalDtype) for f in frames):
            continue
        union = sorted(set().union(*(f[name].cat.categories for f in frames)))
        for f in frames:
            f[name] = f[name].cat.set_categories(union)
    return frames


def _in_order(frame: pd.DataFrame) -> bool:
    """Whether rows already run by (logged_at, instance), as segments written in order do."""
    at = frame["logged_at"].to_numpy()
    instance = frame["instance"].to_numpy()
    later = at[1:] > at[:-1]
    same = at[1:] == at[:-1]
    return bool(np.all(later | (same & (instance[1:] >= instance[:-1]))))


# -- one frame ----------------------------------------------------------------------------------


def _frame(
    model: str,
    version: int,
    columns: Columns,
    held: list[pa.Table],
    feature_types: Mapping[str, FeatureType] | None,
    compact: bool,
) -> pd.DataFrame:
    # The frame is assembled as one Arrow table and converted once with split blocks: building
    # it from a dict of columns made pandas consolidate (copy) every block, which was most of
    # the time and twice the memory of a 1M-row window.
    table = held.pop()  # the caller keeps no reference: the table can go before the frame is made
    n = table.num_rows
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in BASE_COLUMNS:
        if name == "model":
            arrays[name] = pa.array(np.full(n, model, dtype=object), type=pa.string())
        elif name == "version":
            arrays[name] = pa.array(np.full(n, version, dtype=np.int64))
        elif name in ("instance", "set_size"):
            arrays[name] = _numbers(table, name, n).cast(pa.int64())
        elif name in ("logged_at", "confidence_level", "interval_width", "latency_s"):
            arrays[name] = _numbers(table, name, n)
        else:
            arrays[name] = _texts(table, name, n)
    own = dict(columns.features)
    names = list(feature_types) if feature_types is not None else list(own)
    for name in names:
        if name in arrays or name == TRUE_LABEL:
            raise ValueError(f"feature {name!r} has the name of a prediction-log column")
        kind = feature_types[name] if feature_types is not None else own[name]
        column = FEATURE_PREFIX + name
        if kind == "numeric":
            arrays[name] = _numbers(table, column, n, keep_float32=compact)
        else:
            texts = _texts(table, column, n)
            # Categorical codes instead of one 8-byte object pointer per row; the same values.
            arrays[name] = texts.dictionary_encode() if compact else texts
    for label in columns.classes:
        arrays[f"{REFERENCE_PROBABILITY_PREFIX}{label}"] = _numbers(
            table, PROBABILITY_PREFIX + label, n
        )
    for name in columns.context:  # the fairness slices' attributes, under their log names
        arrays[context_column(name)] = _texts(table, context_column(name), n)
    del table  # the float32 originals go now; the strings live on in ``arrays``
    assembled = pa.table(arrays)
    del arrays
    frame: pd.DataFrame = assembled.to_pandas(
        split_blocks=True, self_destruct=True, deduplicate_objects=True
    )
    return frame


def _numbers(
    table: pa.Table, name: str, n: int, keep_float32: bool = False
) -> pa.Array | pa.ChunkedArray:
    """A column as float64 (null -> NaN); a text column's numbers parsed, the rest NaN.
    ``keep_float32`` leaves a float32 column as it is (widening changes no value)."""
    if name not in table.column_names:
        return pa.nulls(n, type=pa.float64())
    column = table[name]
    if keep_float32 and pa.types.is_float32(column.type):
        return column
    if pa.types.is_string(column.type):
        parsed = pd.to_numeric(pd.Series(column.to_pylist(), dtype=object), errors="coerce")
        return pa.array(parsed.to_numpy(dtype=np.float64), from_pandas=True)
    return column.cast(pa.float64())


def _texts(table: pa.Table, name: str, n: int) -> pa.Array | pa.ChunkedArray:
    """A column as strings with null for missing (numbers become their text)."""
    if name not in table.column_names:
        return pa.nulls(n, type=pa.string())
    column = table[name]
    if pa.types.is_string(column.type):
        return column
    values = column.to_pylist()
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _join_feedback(
    frame: pd.DataFrame, feedback: pd.DataFrame, since: float | None
) -> pd.DataFrame:
    """``true_label`` from the latest label of each (request_id, instance); counts in attrs."""
    labels = feedback.sort_values("received_at", kind="stable").drop_duplicates(
        ["request_id", "instance"], keep="last"
    )
    recent = labels if since is None else labels[labels["received_at"] >= since]
    if frame.empty or labels.empty:
        frame[TRUE_LABEL] = np.full(len(frame), None, dtype=object)  # no 1M-item list: 0.1 s
        frame.attrs["feedback"] = {"matched": 0, "unmatched": len(recent)}
        return frame
    # A key lookup, not a merge: merging copies the whole window (every feature column).
    window_keys = _keys(frame)
    positions = _keys(labels).get_indexer(window_keys)  # -1: no label
    values = labels["label"].to_numpy(dtype=object)
    found = positions >= 0
    truth = np.full(len(frame), None, dtype=object)
    truth[found] = values[positions[found]]
    frame[TRUE_LABEL] = truth
    unmatched = int((~_keys(recent).isin(window_keys)).sum())
    frame.attrs["feedback"] = {"matched": int(found.sum()), "unmatched": unmatched}
    return frame


def _keys(frame: pd.DataFrame) -> pd.MultiIndex:
    """(request_id, instance) of each row."""
    return pd.MultiIndex.from_arrays(
        [frame["request_id"].astype(object), frame["instance"].astype(np.int64)]
    )
