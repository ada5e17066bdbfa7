"""What the request path hands the prediction log, and how the writer turns it into rows.

The request path builds one PredictionRecord per served request from arrays it already holds
(no per-row work there); the writer thread converts it with ``record_rows`` (docs/architecture.md,
"Telemetry seam").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import orjson
from numpy.typing import ArrayLike, NDArray

from service.predlog.schema import COLUMN_NAMES, Row


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One served request: ``rows`` instances of one model version.

    ``features`` maps each feature to its [N, 1] column as the model received it: float32 with
    NaN for a missing number, or object strings with "" for a missing category. The [N, C]
    arrays follow ``classes``' order; ``labels`` are the predicted classes.
    """

    logged_at: float
    request_id: str
    model: str
    version: int
    protocol: str
    classes: Sequence[str]
    features: Mapping[str, ArrayLike]
    probabilities: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    prediction_sets: NDArray[np.bool_]
    labels: Sequence[str]
    confidence_level: float
    latency_s: float

    @property
    def rows(self) -> int:
        """The number of instances (rows of the log) in this request."""
        return len(self.labels)


@dataclass(frozen=True, slots=True)
class FeedbackLabel:
    """A ground-truth label for the prediction (request_id, instance)."""

    request_id: str
    instance: int
    label: str


@dataclass(frozen=True, slots=True)
class FeedbackCounts:
    """What became of a feedback body's entries."""

    accepted: int = 0
    unknown: int = 0  # no logged prediction (model, request_id, instance)
    invalid: int = 0  # the label is not a class of the model


def feature_values(column: ArrayLike) -> list[Any]:
    """One feature's raw values as JSON-ready Python values; missing ones are None.

    Numbers go through orjson's numpy serializer and back: NaN becomes null, and a float32
    keeps its shortest text (0.1, not 0.10000000149011612).
    """
    array = np.asarray(column).reshape(-1)
    if array.dtype.kind == "f":
        values: list[Any] = orjson.loads(orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY))
        return values
    if array.dtype.kind in "iub":
        return list(array.tolist())
    return [None if v is None or v == "" or v != v else _plain(v) for v in array.tolist()]


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy scalars inside object arrays included)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def record_rows(record: PredictionRecord, row_key: str, first_seq: int) -> list[Row]:
    """The ``predictions`` rows of one record; keys ``{row_key}-{first_seq + i}``."""
    n = record.rows
    classes = list(record.classes)
    names = list(record.features)
    columns = [feature_values(record.features[name]) for name in names]
    probabilities = np.asarray(record.probabilities, dtype=np.float64).reshape(n, len(classes))
    lower = np.asarray(record.lower, dtype=np.float64).reshape(n, len(classes))
    upper = np.asarray(record.upper, dtype=np.float64).reshape(n, len(classes))
    members = np.asarray(record.prediction_sets, dtype=bool).reshape(n, len(classes))
    index = {c: i for i, c in enumerate(classes)}
    predicted = np.fromiter((index[label] for label in record.labels), dtype=np.intp, count=n)
    rows_at = np.arange(n)
    widths = (upper[rows_at, predicted] - lower[rows_at, predicted]).tolist()
    sizes = members.sum(axis=1).tolist()
    p_list, lo_list, hi_list = probabilities.tolist(), lower.tolist(), upper.tolist()
    labels_array = np.asarray(classes, dtype=object)
    dumps = orjson.dumps
    out: list[Row] = []
    for i in range(n):
        features = dict(zip(names, (column[i] for column in columns), strict=True))
        out.append(
            (
                f"{row_key}-{first_seq + i}",
                float(record.logged_at),
                record.request_id,
                i,
                record.model,
                int(record.version),
                record.protocol,
                dumps(features).decode(),
                dumps(dict(zip(classes, p_list[i], strict=True))).decode(),
                dumps(dict(zip(classes, lo_list[i], strict=True))).decode(),
                dumps(dict(zip(classes, hi_list[i], strict=True))).decode(),
                dumps(labels_array[members[i]].tolist()).decode(),
                str(record.labels[i]),
                float(record.confidence_level),
                float(widths[i]),
                int(sizes[i]),
                float(record.latency_s),
            )
        )
    return out


def records_rows(records: Sequence[PredictionRecord], row_key: str, first_seq: int) -> list[Row]:
    """The rows of several records, keyed in order from ``first_seq``.

    Consecutive records of one model version are converted as one block: the per-call numpy
    and orjson overhead of a 1-row record was most of the log's CPU cost at batch 1, and the
    writer thread shares a core with the event loop. Raises like :func:`record_rows`.
    """
    out: list[Row] = []
    seq = first_seq
    start = 0
    while start < len(records):
        first = records[start]
        stop = start + 1
        while stop < len(records) and _same_layout(first, records[stop]):
            stop += 1
        group = records[start:stop]
        merged = group[0] if len(group) == 1 else _merge(group)
        rows = record_rows(merged, row_key, seq)
        if len(group) > 1:
            rows = _restore_request_fields(rows, group)
        out += rows
        seq += len(rows)
        start = stop
    return out


def _same_layout(a: PredictionRecord, b: PredictionRecord) -> bool:
    return (
        a.model == b.model
        and a.version == b.version
        and tuple(a.classes) == tuple(b.classes)
        and a.features.keys() == b.features.keys()
    )


def _merge(group: Sequence[PredictionRecord]) -> PredictionRecord:
    """One record holding every row of ``group`` (per-request fields fixed afterwards)."""
    first = group[0]
    features = {
        name: np.concatenate([np.asarray(r.features[name]).reshape(-1) for r in group])
        for name in first.features
    }
    return PredictionRecord(
        logged_at=first.logged_at,
        request_id=first.request_id,
        model=first.model,
        version=first.version,
        protocol=first.protocol,
        classes=first.classes,
        features=features,
        probabilities=np.concatenate([r.probabilities for r in group]),
        lower=np.concatenate([r.lower for r in group]),
        upper=np.concatenate([r.upper for r in group]),
        prediction_sets=np.concatenate([r.prediction_sets for r in group]),
        labels=[label for r in group for label in r.labels],
        confidence_level=first.confidence_level,
        latency_s=first.latency_s,
    )


#: Positions, in a row, of the fields that belong to a request rather than to an instance.
_LOGGED_AT, _REQUEST_ID, _INSTANCE, _PROTOCOL, _LEVEL, _LATENCY = (
    COLUMN_NAMES.index(name)
    for name in (
        "logged_at",
        "request_id",
        "instance",
        "protocol",
        "confidence_level",
        "latency_s",
    )
)


def _restore_request_fields(rows: list[Row], group: Sequence[PredictionRecord]) -> list[Row]:
    fixed: list[Row] = []
    i = 0
    for record in group:
        for instance in range(record.rows):
            row = list(rows[i])
            row[_LOGGED_AT] = float(record.logged_at)
            row[_REQUEST_ID] = record.request_id
            row[_INSTANCE] = instance
            row[_PROTOCOL] = record.protocol
            row[_LEVEL] = float(record.confidence_level)
            row[_LATENCY] = float(record.latency_s)
            fixed.append(cast(Row, tuple(row)))
            i += 1
    return fixed
