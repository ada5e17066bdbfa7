"""What the request path hands the prediction log, and how the writer turns it into rows.

The request path builds one PredictionRecord per served request from arrays it already holds
(no per-row work there); the writer thread converts it with ``record_rows`` (docs/architecture.md,
"Telemetry seam").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, cast

import numpy as np
import orjson
from numpy.typing import ArrayLike, NDArray

from service.predlog.schema import Row


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
    #: Optionally, the numeric features as one float32 [F, N] block with their names (the
    #: ``features`` columns of those names hold the same values): one serialisation, not F.
    numeric: tuple[tuple[str, ...], NDArray[np.float32]] | None = None

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
    return _rows((record,), row_key, first_seq)


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
        rows = _rows(records[start:stop], row_key, seq)
        out += rows
        seq += len(rows)
        start = stop
    return out


def _rows(group: Sequence[PredictionRecord], row_key: str, first_seq: int) -> list[Row]:
    """Rows of records sharing one layout, built column by column and zipped once.

    Each JSON column is produced per row by orjson from plain lists; everything else is a list
    the rows are zipped from, so no per-row Python work is done that a whole column can do.
    """
    first = group[0]
    classes = list(first.classes)
    n_classes = len(classes)
    counts = [r.rows for r in group]
    n = sum(counts)

    def stacked(name: str) -> NDArray[Any]:
        if len(group) == 1:
            return np.asarray(first.features[name]).reshape(n, -1)
        return np.concatenate([np.asarray(r.features[name]).reshape(-1, 1) for r in group])

    def matrix(pick: Callable[[PredictionRecord], Any], dtype: type) -> NDArray[Any]:
        parts: list[NDArray[Any]] = [
            np.asarray(pick(r), dtype=dtype).reshape(-1, n_classes) for r in group
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    blocks = [r.numeric for r in group]
    numeric_block: NDArray[np.float32] | None = None
    numeric_names: list[str] = []
    if blocks[0] is not None and all(b is not None and b[0] == blocks[0][0] for b in blocks):
        parts = [b[1] for b in blocks if b is not None]
        numeric_names = list(blocks[0][0])
        joined = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        numeric_block = np.ascontiguousarray(joined.T)  # [N, F]: one JSON array per row
    features = _feature_json(list(first.features), stacked, n, numeric_names, numeric_block)
    probabilities = matrix(lambda r: r.probabilities, np.float64)
    lower = matrix(lambda r: r.lower, np.float64)
    upper = matrix(lambda r: r.upper, np.float64)
    members = matrix(lambda r: r.prediction_sets, np.bool_)
    labels = [str(label) for r in group for label in r.labels]
    index = {c: i for i, c in enumerate(classes)}
    predicted = np.fromiter((index[label] for label in labels), dtype=np.intp, count=n)
    rows_at = np.arange(n)
    widths = (upper[rows_at, predicted] - lower[rows_at, predicted]).tolist()

    def per_instance(value: Callable[[PredictionRecord], Any]) -> list[Any]:
        return [v for r, k in zip(group, counts, strict=True) for v in repeat(value(r), k)]

    columns: tuple[Iterable[Any], ...] = (
        [f"{row_key}-{seq}" for seq in range(first_seq, first_seq + n)],
        per_instance(lambda r: float(r.logged_at)),
        per_instance(lambda r: r.request_id),
        [i for k in counts for i in range(k)],
        repeat(first.model, n),
        repeat(int(first.version), n),
        per_instance(lambda r: r.protocol),
        features,
        _json_objects(classes, probabilities),
        _json_objects(classes, lower),
        _json_objects(classes, upper),
        _set_json(members, classes),
        labels,
        per_instance(lambda r: float(r.confidence_level)),
        widths,
        members.sum(axis=1).tolist(),
        per_instance(lambda r: float(r.latency_s)),
    )
    return cast(list[Row], list(zip(*columns, strict=False)))


def _feature_json(
    names: list[str],
    stacked: Callable[[str], NDArray[Any]],
    n: int,
    numeric: list[str],
    block: NDArray[np.float32] | None,
) -> list[str]:
    """Each row's ``{feature: raw value}`` object, keys in the model's feature order.

    ``block`` ([N, F], C order) holds the ``numeric`` features when the codec provided them.
    """
    arrays: dict[str, NDArray[Any]] = {}
    if block is None:
        arrays = {name: stacked(name) for name in names}
        numeric = [name for name in names if arrays[name].dtype.kind == "f"]
        if numeric:
            block = np.concatenate([arrays[name] for name in numeric], axis=1)
    if block is not None and numeric == names:
        return _json_objects(names, block)
    values: Sequence[Sequence[Any]] = [() for _ in range(n)]
    if block is not None:
        # All float columns in one orjson round trip: NaN becomes null and a float32 keeps its
        # shortest text (0.1, not 0.10000000149011612), as feature_values does per column.
        values = orjson.loads(orjson.dumps(block, option=orjson.OPT_SERIALIZE_NUMPY))
    if len(numeric) < len(names):  # categoricals too: back to columns, in the model's order
        by_name: dict[str, Sequence[Any]] = {}
        if numeric:
            by_name.update(zip(numeric, zip(*values, strict=True), strict=True))
        for name in names:
            if name not in by_name:
                by_name[name] = feature_values(arrays[name] if name in arrays else stacked(name))
        values = list(zip(*(by_name[name] for name in names), strict=True))
    dumps = orjson.dumps
    return [dumps(dict(zip(names, row, strict=True))).decode() for row in values]


def _json_objects(keys: Sequence[str], matrix: NDArray[np.floating[Any]]) -> list[str]:
    """Row i of an [N, K] float matrix as the JSON object ``{keys[j]: matrix[i, j]}``.

    orjson writes every number of the matrix in one call (NaN as null, a float32 as its
    shortest text); a format string made once from the JSON-escaped keys adds the keys, so a
    row costs one split and one format instead of a dict and a serialisation.
    """
    if matrix.shape[0] == 0:
        return []
    text = orjson.dumps(np.ascontiguousarray(matrix), option=orjson.OPT_SERIALIZE_NUMPY).decode()
    # Escaped keys may hold braces, which str.format would read as fields: double them.
    fields = (orjson.dumps(k).decode().replace("{", "{{").replace("}", "}}") for k in keys)
    template = "{{" + ",".join(f"{key}:{{}}" for key in fields) + "}}"
    # Numbers and null hold no "," or "]": the text splits into rows, then values, exactly.
    return [template.format(*row.split(",")) for row in text[2:-2].split("],[")]


def _set_json(members: NDArray[np.bool_], classes: list[str]) -> list[str]:
    """Each row's prediction set as a JSON list of labels; each distinct set is encoded once."""
    encoded: dict[bytes, str] = {}
    out: list[str] = []
    labels = np.asarray(classes, dtype=object)
    for row in members:
        key = row.tobytes()
        text = encoded.get(key)
        if text is None:
            text = encoded[key] = orjson.dumps(labels[row].tolist()).decode()
        out.append(text)
    return out


def _same_layout(a: PredictionRecord, b: PredictionRecord) -> bool:
    return (
        a.model == b.model
        and a.version == b.version
        and tuple(a.classes) == tuple(b.classes)
        and a.features.keys() == b.features.keys()
    )
