"""Arrow arrays built from their buffers, so writing the log never imports pandas.

``pyarrow.array`` asks pandas whether its argument is a pandas object, importing pandas on the
first call whatever the argument: in a serving process that is 43 MiB of memory and half a second
with the GIL held by the log's writer thread, for a library the server never uses. Numbers wrap
their numpy buffer without a copy; text is encoded once into one data buffer and its offsets
(docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

_TYPES: dict[str, pa.DataType] = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
}
# Offsets of a string array are int32: one array holds less than 2 GiB of text.
_MAX_TEXT_BYTES = 2**31 - 1


def _bits(flags: NDArray[np.bool_]) -> pa.Buffer:
    """A bitmap (least significant bit first, Arrow's order) of ``flags``."""
    return pa.py_buffer(np.packbits(flags, bitorder="little"))


def numbers(values: NDArray[Any], nan_is_null: bool = False) -> pa.Array:
    """A numeric or boolean array over ``values`` (1-D); with ``nan_is_null`` NaN becomes null."""
    flat = np.ascontiguousarray(values).reshape(-1)
    n = len(flat)
    if flat.dtype == np.bool_:
        return pa.Array.from_buffers(pa.bool_(), n, [None, _bits(flat)])
    kind = _TYPES.get(flat.dtype.name)
    if kind is None:
        raise TypeError(f"no Arrow type for a {flat.dtype} column of the prediction log")
    validity = None
    if nan_is_null and flat.dtype.kind == "f":
        missing = np.isnan(flat)
        if missing.any():
            validity = _bits(~missing)
    return pa.Array.from_buffers(kind, n, [validity, pa.py_buffer(flat)])


def _is_missing(value: object, empty_is_null: bool) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return empty_is_null and value == ""


def strings(values: Iterable[object], empty_is_null: bool = False) -> pa.Array:
    """A string array of ``values``: None and NaN are null ("" too with ``empty_is_null``).

    Values that are not text (numbers in an object column) are stored as their text.
    """
    items: Sequence[object] = values if isinstance(values, list) else list(values)
    n = len(items)
    present = np.fromiter(
        (not _is_missing(v, empty_is_null) for v in items), dtype=np.bool_, count=n
    )
    encoded = [
        (v if isinstance(v, str) else str(v)).encode() if keep else b""
        for v, keep in zip(items, present.tolist(), strict=True)
    ]
    return _text_array(encoded, None if present.all() else present)


def texts(values: Sequence[str]) -> pa.Array:
    """A string array of ``values``, all present (ids, protocols, labels)."""
    joined = "".join(values)
    data = joined.encode()
    if len(data) == len(joined):  # ASCII, as ids and labels mostly are: bytes are characters
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        return _text_buffers(lengths, data, None)
    return _text_array([v.encode() for v in values], None)


def picked_texts(values: Sequence[str], index: NDArray[np.intp]) -> pa.Array:
    """A string array of ``values[i]`` for each ``i`` of ``index`` (a class label on each row),
    all present; numpy gathers the bytes, not a row loop."""
    encoded = [v.encode() for v in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    picked_lengths = lengths[index]
    width = int(lengths.max(initial=0))
    if width == 0:
        return _text_buffers(picked_lengths, b"", None)
    # Each value zero-padded to one fixed-size item: gathering items is one copy per row.
    item = np.dtype((np.void, width))
    padded = np.frombuffer(b"".join(e.ljust(width, b"\0") for e in encoded), dtype=item)
    picked = padded[index].view(np.uint8)
    if (lengths == width).all():
        return _text_buffers(picked_lengths, picked.tobytes(), None)
    # A picked item keeps its value's length of bytes.
    masks = np.arange(width) < lengths[:, np.newaxis]
    keep = masks.view(item).reshape(-1)[index].view(np.bool_)
    return _text_buffers(picked_lengths, picked[keep].tobytes(), None)


def repeated_texts(values: Sequence[str], counts: Sequence[int]) -> pa.Array:
    """A string array of ``values[i]`` repeated ``counts[i]`` times, in order (a request's id on
    each of its rows, a flush's one protocol): one step per value, not per row."""
    encoded = [v.encode() for v in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    data = b"".join(map(bytes.__mul__, encoded, counts))
    return _text_buffers(np.repeat(lengths, counts), data, None)


def _text_array(encoded: list[bytes], present: NDArray[np.bool_] | None) -> pa.Array:
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    return _text_buffers(lengths, b"".join(encoded), present)


def _text_buffers(
    lengths: NDArray[np.int64], data: bytes, present: NDArray[np.bool_] | None
) -> pa.Array:
    """A string array of values of ``lengths`` bytes, laid end to end in ``data``."""
    n = len(lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _MAX_TEXT_BYTES:
        raise ValueError("a prediction log batch holds over 2 GiB of text in one column")
    validity = None if present is None else _bits(present)
    return pa.Array.from_buffers(
        pa.string(), n, [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )
