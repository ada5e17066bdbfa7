"""An Arrow record batch as PostgreSQL's binary COPY data, built by numpy from Arrow's buffers.

The binary format (PostgreSQL's COPY reference, "Binary Format"): an 11-byte signature, int32
flags and int32 header-extension length (both 0); per tuple an int16 field count, then per field
an int32 byte length (-1: NULL, no bytes) and the value in network byte order; an int16 -1 ends
it. Numbers are copied, not formatted as text for the server to parse back, and nothing runs per
row or per value in Python: the fields of one size in every row (numbers without nulls, text of
one length) are a record of a numpy structured dtype, filled a column at a time; the values
whose size varies by row (other text, numbers of a column with nulls) are put in between with
an index per byte (docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import functools
import itertools
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

#: The signature, then int32 flags and int32 header-extension length, both 0.
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
#: A field count of -1 ends the data.
TRAILER = struct.pack("!h", -1)

_TEXT = "string"
#: Arrow type (as text) -> its value as the binary format holds it (big-endian).
_SENT: dict[str, np.dtype[Any]] = {
    "double": np.dtype(">f8"),
    "float": np.dtype(">f4"),
    "int32": np.dtype(">i4"),
    "bool": np.dtype(np.uint8),
}
#: Arrow type (as text) -> the dtype of its values buffer (Arrow's order, little-endian).
_HELD: dict[str, np.dtype[Any]] = {
    "double": np.dtype("<f8"),
    "float": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
}
_LENGTH = np.dtype(">i4")
_NO_BYTES = np.zeros(0, dtype=np.uint8)
#: A column's value size in a layout when it varies by row.
_VARIES = -1


@dataclass(frozen=True, slots=True)
class _Varying:
    """A column's values whose size varies by row: row r's bytes are
    ``data[starts[r] : starts[r] + lengths[r]]``; ``sent`` is the length sent (-1: NULL)."""

    data: NDArray[np.uint8]
    starts: NDArray[np.int64]
    lengths: NDArray[np.int64]
    sent: NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class _Layout:
    """The bytes of one size in every row, as a record: the field count (``count``), then per
    column its length (``l{j}``) and, when every row's value has one size, the value (``v{j}``);
    ``template`` holds the count and the lengths known before the rows are; ``places`` says where
    each varying column's values go: the end of its length in the record."""

    record: np.dtype[np.void]
    template: NDArray[np.void]
    places: tuple[int, ...]


def binary_copy(batch: pa.RecordBatch) -> memoryview:
    """``batch`` as the data of ``COPY table (columns) FROM STDIN WITH (FORMAT binary)``,
    header and trailer included; its columns double, float, int32, bool or string (nullable)."""
    n = batch.num_rows
    kinds = tuple(_kind(field) for field in batch.schema)
    if n == 0:
        return memoryview(HEADER + TRAILER)
    columns = [_column(kind, array, n) for kind, array in zip(kinds, batch.columns, strict=True)]
    sizes = tuple(_VARIES if isinstance(c, _Varying) else c.dtype.itemsize for c in columns)
    layout = _layout(kinds, sizes)
    width = layout.record.itemsize
    varying = [c for c in columns if isinstance(c, _Varying)]
    body: NDArray[np.uint8] | None = None
    if varying:
        rows = np.empty(n, dtype=layout.record)
    else:  # every row one size: the records are the tuples, built where they are sent from
        body = np.empty(len(HEADER) + n * width + len(TRAILER), dtype=np.uint8)
        rows = body[len(HEADER) : len(HEADER) + n * width].view(layout.record)
    item = np.dtype((np.void, width))  # a record as one item: copied whole, not by field
    rows.view(item)[...] = layout.template.view(item)
    for j, column in enumerate(columns):
        if isinstance(column, _Varying):
            rows[f"l{j}"] = column.sent
        else:
            rows[f"v{j}"] = column
    if body is None:
        body = _pieced(rows, varying, layout.places)
    body[: len(HEADER)] = np.frombuffer(HEADER, dtype=np.uint8)
    body[len(body) - len(TRAILER) :] = np.frombuffer(TRAILER, dtype=np.uint8)
    return body.data


def _pieced(
    rows: NDArray[np.void], varying: list[_Varying], places: tuple[int, ...]
) -> NDArray[np.uint8]:
    """The tuples, after room for the header and before room for the trailer: each row's
    record with its varying values put in at ``places`` (ascending offsets in the record)."""
    width = rows.dtype.itemsize
    lengths = np.stack([v.lengths for v in varying], axis=1)  # [rows, varying columns]
    earlier = np.cumsum(lengths, axis=1) - lengths  # varying bytes before each, in its row
    row_sizes = width + lengths.sum(axis=1)
    row_starts = np.cumsum(row_sizes) - row_sizes + len(HEADER)
    body = np.empty(len(HEADER) + int(row_sizes.sum()) + len(TRAILER), dtype=np.uint8)
    to = row_starts[:, np.newaxis] + np.asarray(places) + earlier  # where each value goes
    # The record between two varying values is one piece of the same size in every row.
    bounds = [0, *places, width]
    for k, (start, stop) in enumerate(itertools.pairwise(bounds)):
        if stop > start:
            at = row_starts if k == 0 else to[:, k - 1] + lengths[:, k - 1]
            _copy_pieces(body, at, rows, start, stop - start)
    flat = lengths.reshape(-1)
    total = int(flat.sum())
    if total:
        bases = np.cumsum([0] + [len(v.data) for v in varying[:-1]])
        starts = (np.stack([v.starts for v in varying], axis=1) + bases).reshape(-1)
        data = np.concatenate([v.data for v in varying]) if len(varying) > 1 else varying[0].data
        # Byte i of all the varying bytes is byte ``within[i]`` of its value.
        within = np.arange(total) - np.repeat(np.cumsum(flat) - flat, flat)
        body[np.repeat(to.reshape(-1), flat) + within] = data[np.repeat(starts, flat) + within]
    return body


def _copy_pieces(
    body: NDArray[np.uint8], at: NDArray[np.int64], rows: NDArray[np.void], start: int, size: int
) -> None:
    """Bytes ``start .. start + size`` of each record to ``body[at[r]:]``: one item copy per
    row, through a view of ``body`` with an item of ``size`` bytes starting at every byte."""
    item = np.dtype((np.void, size))
    windows = np.ndarray((len(body) - size + 1,), dtype=item, buffer=body, strides=(1,))
    pieces = np.ndarray(
        (len(rows),), dtype=item, buffer=rows, offset=start, strides=(rows.dtype.itemsize,)
    )
    windows[at] = pieces


def _kind(field: pa.Field) -> str:
    """The Arrow type of a column as text; TypeError for a type binary COPY is not given."""
    kind = str(field.type)
    if kind != _TEXT and kind not in _SENT:
        expected = ", ".join([*_SENT, _TEXT])
        raise TypeError(f"column {field.name!r} is {kind}; binary COPY takes {expected} columns")
    return kind


@functools.lru_cache(maxsize=256)
def _layout(kinds: tuple[str, ...], sizes: tuple[int, ...]) -> _Layout:
    """The record of columns of ``kinds`` whose values have ``sizes`` bytes (-1: it varies)."""
    formats: list[np.dtype[Any]] = [np.dtype(">i2")]
    names, offsets, at = ["count"], [0], 2
    places = []
    for j, (kind, size) in enumerate(zip(kinds, sizes, strict=True)):
        names.append(f"l{j}")
        formats.append(_LENGTH)
        offsets.append(at)
        at += _LENGTH.itemsize
        if size == _VARIES:
            places.append(at)
            continue
        names.append(f"v{j}")
        formats.append(np.dtype((np.void, size)) if kind == _TEXT else _SENT[kind])
        offsets.append(at)
        at += size
    record = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": at})
    template = np.zeros((), dtype=record)
    template["count"] = len(kinds)
    for j, size in enumerate(sizes):
        if size != _VARIES:
            template[f"l{j}"] = size
    return _Layout(record, template, tuple(places))


def _column(kind: str, array: pa.Array, n: int) -> NDArray[Any] | _Varying:
    """A column's values: an array of them when each has the same size (numbers without nulls,
    text of one length, none null), else varying by row."""
    valid = _flags(array.buffers()[0], array.offset, n) if array.null_count else None
    if kind == _TEXT:
        return _text(array, valid)
    values = _numbers(kind, array, n)
    if valid is None:
        return values
    sent = np.ascontiguousarray(values, dtype=_SENT[kind]).view(np.uint8)
    size = _SENT[kind].itemsize
    lengths = valid * np.int64(size)
    starts = np.arange(0, n * size, size, dtype=np.int64)
    return _Varying(sent, starts, lengths, np.where(valid, size, -1))


def _flags(buffer: pa.Buffer | None, offset: int, n: int) -> NDArray[np.bool_] | None:
    """Bits ``offset .. offset + n`` of an Arrow bitmap (least significant bit first) as
    booleans; None for no bitmap."""
    if buffer is None:
        return None
    skip = offset % 8
    raw = np.frombuffer(buffer, dtype=np.uint8, count=(skip + n + 7) // 8, offset=offset // 8)
    bits = np.unpackbits(raw, count=skip + n, bitorder="little")[skip:]
    return bits.view(np.bool_)


def _numbers(kind: str, array: pa.Array, n: int) -> NDArray[Any]:
    """A number or bool column's values as Arrow holds them (a null's is whatever its slot
    holds); bools as 0 and 1."""
    buffer = array.buffers()[1]
    if kind == "bool":
        bits = _flags(buffer, array.offset, n)
        return np.zeros(n, dtype=np.uint8) if bits is None else bits.view(np.uint8)
    held = _HELD[kind]
    if buffer is None:  # no values buffer: every value is null
        return np.zeros(n, dtype=held)
    return np.frombuffer(buffer, dtype=held, count=n, offset=array.offset * held.itemsize)


def _text(array: pa.Array, valid: NDArray[np.bool_] | None) -> NDArray[Any] | _Varying:
    """A string column's UTF-8 bytes, from Arrow's own buffers: one fixed-size item per row
    when every value is there and has one length, else varying (no bytes for a null)."""
    n = len(array)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=n + 1, offset=array.offset * 4)
    first = int(offsets[0])
    data = _NO_BYTES
    if data_buffer is not None:
        data = np.frombuffer(
            data_buffer, dtype=np.uint8, count=int(offsets[-1]) - first, offset=first
        )
    lengths = np.diff(offsets).astype(np.int64)
    size = int(lengths[0])
    if valid is None and size > 0 and (lengths == size).all():
        return data.view(np.dtype((np.void, size)))
    if valid is not None:  # a null's slot may span bytes; none are sent
        lengths[~valid] = 0
    sent = lengths if valid is None else np.where(valid, lengths, -1)
    return _Varying(data, offsets[:-1].astype(np.int64) - first, lengths, sent)
