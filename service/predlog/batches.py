"""Queued records become Arrow record batches: whole columns at a time, never a Python row.

The writer groups a flush by partition (kind, model, version, UTC date) and calls
``prediction_batch`` once per group: numbers are concatenated by numpy and wrapped by Arrow
without a per-row step; only the per-request scalars (id, time, latency) are read per record
(docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from service.predlog.layout import FEEDBACK_SCHEMA, Columns, FeatureKind, Kind
from service.predlog.record import FeedbackRecord, PredictionRecord

_DAY_S = 86400
_LABELS = attrgetter("labels")
_PROBABILITIES = attrgetter("probabilities")
_LOWER = attrgetter("lower")
_UPPER = attrgetter("upper")
_SETS = attrgetter("prediction_sets")
_LOGGED_AT = attrgetter("logged_at")
_REQUEST_ID = attrgetter("request_id")
_PROTOCOL = attrgetter("protocol")
_CONFIDENCE = attrgetter("confidence_level")
_LATENCY = attrgetter("latency_s")
_NUMERIC = attrgetter("numeric")


@dataclass(frozen=True, slots=True)
class Partition:
    """Where a batch belongs: ``version`` is None for feedback."""

    kind: Kind
    model: str
    version: int | None
    date: str


_DATES: dict[int, str] = {}


def utc_date(seconds: float) -> str:
    """``YYYY-MM-DD`` of a unix time, UTC (memoised per day: records of a flush share it)."""
    day = int(seconds // _DAY_S)
    text = _DATES.get(day)
    if text is None:
        if len(_DATES) > 64:
            _DATES.clear()
        text = _DATES[day] = dt.datetime.fromtimestamp(day * _DAY_S, dt.UTC).date().isoformat()
    return text


def partition_of(record: PredictionRecord | FeedbackRecord) -> Partition:
    """The partition a queued record belongs to."""
    if isinstance(record, FeedbackRecord):
        return Partition("feedback", record.model, None, utc_date(record.received_at))
    return Partition("predictions", record.model, int(record.version), utc_date(record.logged_at))


@functools.lru_cache(maxsize=256)
def _class_index(classes: tuple[str, ...]) -> dict[str, int]:
    """Class label -> its column index."""
    return {label: i for i, label in enumerate(classes)}


def columns_of(record: PredictionRecord) -> Columns:
    """The column layout of a record's model version (its features' kinds from their dtypes)."""
    kinds: list[tuple[str, FeatureKind]] = []
    numeric = set(record.numeric[0]) if record.numeric is not None else set()
    for name, column in record.features.items():
        floating = name in numeric or np.asarray(column).dtype.kind == "f"
        kinds.append((name, "numeric" if floating else "categorical"))
    context = tuple(record.context) if record.context else ()
    return Columns(tuple(kinds), tuple(str(c) for c in record.classes), context)


def _joined(parts: list[NDArray[Any]], axis: int = 0) -> NDArray[Any]:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def _strings(values: NDArray[Any]) -> pa.Array:
    """Categorical values as strings; "" and None are missing (null)."""
    flat = values.reshape(-1)
    if flat.dtype.kind == "U":
        return pa.array(flat, type=pa.string(), mask=flat == "")
    try:
        return pa.array(flat, type=pa.string(), from_pandas=True, mask=flat == "")
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # numbers in an object column: their text
        texts = [None if v is None or v == "" else str(v) for v in flat.tolist()]
        return pa.array(texts, type=pa.string())


def prediction_batch(group: Sequence[PredictionRecord], columns: Columns) -> pa.RecordBatch:
    """One record batch of records sharing ``columns`` (raises on a malformed record)."""
    schema = columns.schema()
    # map/attrgetter: a flush of 1-row records spends most of its Python time here.
    labels_of = list(map(_LABELS, group))
    counts = np.fromiter(map(len, labels_of), dtype=np.int64, count=len(group))
    n = int(counts.sum())
    owner = np.repeat(np.arange(len(group)), counts)  # row -> its record
    starts = np.cumsum(counts) - counts
    n_classes = len(columns.classes)

    def matrix(parts: list[Any], dtype: type) -> NDArray[Any]:
        if len(parts) == 1:
            return np.asarray(parts[0], dtype=dtype).reshape(-1, n_classes)
        # The records' own [rows, C] arrays, joined and cast in one call (no per-record view).
        joined: NDArray[Any] = np.concatenate(parts, axis=0, dtype=dtype)
        if joined.shape != (n, n_classes):
            raise ValueError("a record's class arrays do not match its rows and classes")
        return joined

    probabilities = matrix(list(map(_PROBABILITIES, group)), np.float64)
    lower = matrix(list(map(_LOWER, group)), np.float64)
    upper = matrix(list(map(_UPPER, group)), np.float64)
    members = matrix(list(map(_SETS, group)), np.bool_)
    flat = labels_of[0] if len(group) == 1 else list(chain.from_iterable(labels_of))
    labels = pa.array(flat, type=pa.string())
    # A dict lookup per row, not pyarrow.compute: the first compute call initialises Arrow's
    # kernel registry, about 45 MiB of a serving process's memory. KeyError: not a class.
    index = np.fromiter(map(_class_index(columns.classes).__getitem__, flat), np.intp, n)
    at = np.arange(n)
    width = upper[at, index] - lower[at, index]

    def per_request(pick: attrgetter[Any]) -> NDArray[np.float64]:
        values = np.fromiter(map(pick, group), dtype=np.float64, count=len(group))
        return values if n == len(group) else values[owner]

    def texts(pick: attrgetter[Any]) -> pa.Array:
        values = list(map(pick, group))
        if n == len(group):
            return pa.array(values, type=pa.string())
        return pa.array(np.asarray(values, dtype=object)[owner], type=pa.string())

    arrays: list[pa.Array] = [
        pa.array(per_request(_LOGGED_AT)),
        texts(_REQUEST_ID),
        pa.array((at - starts[owner]).astype(np.int32)),
        texts(_PROTOCOL),
        labels,
        pa.array(per_request(_CONFIDENCE)),
        pa.array(width),
        pa.array(members.sum(axis=1, dtype=np.int32)),
        pa.array(per_request(_LATENCY)),
    ]
    arrays += _feature_arrays(group, columns)
    for block, nulls in ((probabilities, True), (lower, True), (upper, True), (members, False)):
        for j in range(n_classes):
            column = np.ascontiguousarray(block[:, j])
            arrays.append(pa.array(column, from_pandas=nulls))
    for name in columns.context:
        # Every record of the group shares the layout, so each holds every context column.
        arrays.append(_strings(_joined([(r.context or {})[name] for r in group])))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _feature_arrays(group: Sequence[PredictionRecord], columns: Columns) -> list[pa.Array]:
    """Each feature's column (NaN -> null), from the numeric [F, N] blocks when all have one."""
    blocks = list(map(_NUMERIC, group))
    block: NDArray[np.float32] | None = None
    block_names: tuple[str, ...] = ()
    first = blocks[0]
    if first is not None and all(b is not None and b[0] == first[0] for b in blocks):
        block_names = first[0]
        block = _joined([b[1] for b in blocks if b is not None], axis=1)
    out: list[pa.Array] = []
    row_of = {name: i for i, name in enumerate(block_names)}
    for name, kind in columns.features:
        if block is not None and name in row_of:
            values: NDArray[Any] = np.ascontiguousarray(block[row_of[name]], dtype=np.float32)
        else:
            values = _joined([np.asarray(r.features[name]).reshape(-1) for r in group])
        if kind == "numeric":
            out.append(pa.array(values.astype(np.float32, copy=False), from_pandas=True))
        else:
            out.append(_strings(values))
    return out


def feedback_batch(group: Sequence[FeedbackRecord]) -> pa.RecordBatch:
    """One record batch of feedback labels."""
    counts = [r.rows for r in group]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.repeat([r.received_at for r in group], counts).astype(np.float64)),
            pa.array([i for r in group for i in r.request_ids], type=pa.string()),
            pa.array([i for r in group for i in r.instances], type=pa.int32()),
            pa.array([label for r in group for label in r.labels], type=pa.string()),
        ],
        schema=FEEDBACK_SCHEMA,
    )
