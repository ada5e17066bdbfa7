"""Queued records become Arrow record batches: whole columns at a time, never a Python row.

The writer groups a flush by partition (kind, model, version, UTC date) and calls
``prediction_batch`` once per group: numbers are concatenated by numpy (a flush of 1-row requests
joins their arrays' bytes end to end, a quarter of the cost) and wrapped by Arrow from their
buffers without a per-row step; only the per-request scalars (id, time, latency) are read per
record (docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import attrgetter, is_, itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from service.predlog.arrow_arrays import (
    numbers,
    picked_texts,
    repeated_texts,
    strings,
    texts,
)
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
_DTYPE = attrgetter("dtype")
_NAMES = itemgetter(0)
_BLOCK = itemgetter(1)
_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)
_BOOL = np.dtype(np.bool_)


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
    """Categorical values as strings; "" and None are missing (null), numbers their text."""
    return strings(values.reshape(-1).tolist(), empty_is_null=True)


def prediction_batch(group: Sequence[PredictionRecord], columns: Columns) -> pa.RecordBatch:
    """One record batch of records sharing ``columns`` (raises on a malformed record)."""
    schema = columns.schema()
    size = len(group)
    # map/attrgetter: a flush of 1-row records spends most of its Python time reading fields.
    labels_of = list(map(_LABELS, group))
    flat = list(labels_of[0] if size == 1 else chain.from_iterable(labels_of))
    n = len(flat)
    n_classes = len(columns.classes)
    counts = np.fromiter(map(len, labels_of), dtype=np.int64, count=size)
    owner: NDArray[np.intp] | None = None  # row -> its record, unless every record has one row
    if (counts == 1).all():
        instance = np.zeros(n, dtype=np.int32)
    else:
        owner = np.repeat(np.arange(size), counts)
        instance = (np.arange(n) - (np.cumsum(counts) - counts)[owner]).astype(np.int32)
    probabilities = _stacked(list(map(_PROBABILITIES, group)), n, n_classes, _F64)
    lower = _stacked(list(map(_LOWER, group)), n, n_classes, _F64)
    upper = _stacked(list(map(_UPPER, group)), n, n_classes, _F64)
    members = _stacked(list(map(_SETS, group)), n, n_classes, _BOOL)
    # A dict lookup per row, not pyarrow.compute: the first compute call initialises Arrow's
    # kernel registry, about 45 MiB of a serving process's memory. KeyError: not a class.
    index = np.fromiter(map(_class_index(columns.classes).__getitem__, flat), np.intp, n)
    at = np.arange(n)
    width = upper[at, index] - lower[at, index]

    def per_request(pick: attrgetter[Any]) -> NDArray[np.float64]:
        values = np.fromiter(map(pick, group), dtype=np.float64, count=size)
        return values if owner is None else values[owner]

    def per_request_texts(values: list[str]) -> pa.Array:
        return texts(values) if owner is None else repeated_texts(values, counts.tolist())

    protocols = list(map(_PROTOCOL, group))
    if protocols.count(protocols[0]) == size:  # one protocol in the whole flush, as usual
        protocol = repeated_texts(protocols[:1], [n])
    else:
        protocol = per_request_texts(protocols)
    arrays: list[pa.Array] = [
        numbers(per_request(_LOGGED_AT)),
        per_request_texts(list(map(_REQUEST_ID, group))),
        numbers(instance),
        protocol,
        picked_texts(columns.classes, index),  # the labels: each is its class's text
        numbers(per_request(_CONFIDENCE)),
        numbers(width),
        numbers(members.sum(axis=1, dtype=np.int32)),
        numbers(per_request(_LATENCY)),
    ]
    arrays += _feature_arrays(group, columns, n, one_row_each=owner is None)
    # Per class, in layout order: probabilities, lower, upper (float64), then the set flags.
    arrays += _float_arrays(np.concatenate([probabilities.T, lower.T, upper.T]))
    flags = numbers(np.ascontiguousarray(members.T))
    arrays += [flags.slice(j * n, n) for j in range(n_classes)]
    for name in columns.context:
        # Every record of the group shares the layout, so each holds every context column.
        arrays.append(_strings(_joined([(r.context or {})[name] for r in group])))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _stacked(parts: list[Any], n: int, width: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    """The records' [rows, width] arrays as one [n, width] array of ``dtype``."""
    if len(parts) == 1:
        one: NDArray[Any] = np.asarray(parts[0], dtype=dtype).reshape(-1, width)
        return one
    values = _end_to_end(parts, n * width, dtype)
    if values is not None:
        return values.reshape(n, width)
    joined: NDArray[Any] = np.concatenate(parts, axis=0, dtype=dtype)
    if joined.shape != (n, width):
        raise ValueError("a record's class arrays do not match its rows and classes")
    return joined


def _end_to_end(parts: list[Any], size: int, dtype: np.dtype[Any]) -> NDArray[Any] | None:
    """The parts' values end to end, read-only, when each is a C-contiguous array of ``dtype``
    and they hold ``size`` values in all; None otherwise (the caller concatenates).

    One bytes join costs a quarter of np.concatenate's per-array work, which is what a flush of
    1-row requests (one small array per row) pays for.
    """
    try:
        # Every dtype, not just the first: the join would take an object array's pointers.
        if len(set(map(_DTYPE, parts))) != 1 or parts[0].dtype != dtype:
            return None
        raw = b"".join(parts)  # TypeError: a strided view
    except (AttributeError, TypeError):  # not arrays (lists), or not contiguous
        return None
    if len(raw) != size * dtype.itemsize:
        return None
    return np.frombuffer(raw, dtype)


def _float_arrays(rows: NDArray[Any]) -> list[pa.Array]:
    """Each row of a C-contiguous 2-D float array as a column (NaN is null): one Arrow array
    of the whole block, sliced, costs a third of an Arrow array per row."""
    flat = rows.reshape(-1)
    whole = numbers(flat, nan_is_null=True)
    n = rows.shape[1]
    return [whole.slice(i * n, n) for i in range(rows.shape[0])]


def _feature_arrays(
    group: Sequence[PredictionRecord], columns: Columns, n: int, *, one_row_each: bool
) -> list[pa.Array]:
    """Each feature's column (NaN -> null), from the numeric [F, N] blocks when all have one;
    ``n`` rows in all, ``one_row_each`` when every record has one."""
    blocks = list(map(_NUMERIC, group))
    block: NDArray[np.float32] | None = None
    block_names: tuple[str, ...] = ()
    first = blocks[0]
    if first is not None and None not in blocks:
        names = first[0]
        # One tuple of names per model, usually: identity first, equality only when needed.
        if all(map(is_, repeat(names), map(_NAMES, blocks))) or all(b[0] == names for b in blocks):
            block_names = names
            parts = list(map(_BLOCK, blocks))
            block = _feature_block(parts, n, len(names), one_row_each=one_row_each)
    out: list[pa.Array] = []
    row_of = {name: i for i, name in enumerate(block_names)}
    numeric = [] if block is None else _float_arrays(block)
    for name, kind in columns.features:
        if block is not None and name in row_of:
            out.append(numeric[row_of[name]])
            continue
        values = _joined([np.asarray(r.features[name]).reshape(-1) for r in group])
        if kind == "numeric":
            out.append(numbers(values.astype(np.float32, copy=False), nan_is_null=True))
        else:
            out.append(_strings(values))
    return out


def _feature_block(
    parts: list[NDArray[Any]], n: int, features: int, *, one_row_each: bool
) -> NDArray[np.float32]:
    """The records' numeric [F, rows] blocks as one C-contiguous float32 [F, n] block."""
    if one_row_each and len(parts) > 1:  # each [F, 1] block is then one row of [n, F]
        values = _end_to_end(parts, n * features, _F32)
        if values is not None:
            return np.ascontiguousarray(values.reshape(n, features).T)
    return np.ascontiguousarray(_joined(parts, axis=1), dtype=np.float32)


def feedback_batch(group: Sequence[FeedbackRecord]) -> pa.RecordBatch:
    """One record batch of feedback labels."""
    counts = [r.rows for r in group]
    return pa.RecordBatch.from_arrays(
        [
            numbers(np.repeat([r.received_at for r in group], counts).astype(np.float64)),
            texts([i for r in group for i in r.request_ids]),
            numbers(np.array([i for r in group for i in r.instances], dtype=np.int32)),
            texts([label for r in group for label in r.labels]),
        ],
        schema=FEEDBACK_SCHEMA,
    )
