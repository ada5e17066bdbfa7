"""PostgreSQL's binary COPY data from Arrow batches: exact bytes worked out by hand, and a round
trip through a throwaway PostgreSQL of nulls, NaN, infinities, hostile text and sliced arrays."""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from service.predlog.pg_binary import binary_copy
from service.predlog.postgres_store import CLIENT_ENCODING
from tests.pg_support import PostgresServer, running_postgres

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # flags 0, no extension
TRAILER = b"\xff\xff"  # field count -1


def field(data: bytes) -> bytes:
    """One field: its int32 byte length, then its bytes."""
    return struct.pack("!i", len(data)) + data


NULL = struct.pack("!i", -1)


def test_a_small_batch_is_the_bytes_worked_out_by_hand() -> None:
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([1.5, math.nan, -2.0], pa.float64()),
            pa.array([0.25, None, 3.0], pa.float32()),
            pa.array([-2, None, 65536], pa.int32()),
            pa.array([True, False, None], pa.bool_()),
            pa.array(["né", None, ""], pa.string()),
            pa.array(["ab", "cd", "xé"], pa.string()),  # 2 bytes each: one size in every row
        ],
        names=["d", "f", "i", "b", "s", "t"],
    )
    count = b"\x00\x06"
    rows = [
        count
        + field(b"\x3f\xf8\x00\x00\x00\x00\x00\x00")  # 1.5 = 1.1b x 2^0: exponent 0x3ff
        + field(b"\x3e\x80\x00\x00")  # 0.25 = 1.0b x 2^-2: exponent 127 - 2 = 0x7d
        + field(b"\xff\xff\xff\xfe")  # -2, two's complement
        + field(b"\x01")
        + field(b"n\xc3\xa9")  # é is two bytes in UTF-8
        + field(b"ab"),
        count
        + field(b"\x7f\xf8\x00\x00\x00\x00\x00\x00")  # the quiet NaN: a NaN, not a NULL
        + NULL
        + NULL
        + field(b"\x00")
        + NULL
        + field(b"cd"),
        count
        + field(b"\xc0\x00\x00\x00\x00\x00\x00\x00")  # -2.0: sign bit, exponent 0x400
        + field(b"\x40\x40\x00\x00")  # 3.0 = 1.1b x 2^1: exponent 128
        + field(b"\x00\x01\x00\x00")  # 65536 = 2^16
        + NULL
        + field(b"")  # an empty string is a zero-length value, not NULL
        + field(b"x\xc3\xa9"),
    ]
    assert bytes(binary_copy(batch)) == HEADER + b"".join(rows) + TRAILER


def test_numbers_without_nulls_are_the_bytes_worked_out_by_hand() -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1.0, -0.5], pa.float64()), pa.array([7, -1], pa.int32())], names=["x", "n"]
    )
    rows = [
        b"\x00\x02" + field(b"\x3f\xf0" + bytes(6)) + field(b"\x00\x00\x00\x07"),
        b"\x00\x02" + field(b"\xbf\xe0" + bytes(6)) + field(b"\xff\xff\xff\xff"),
    ]
    assert bytes(binary_copy(batch)) == HEADER + b"".join(rows) + TRAILER


def test_a_text_column_of_empty_strings_only_sends_zero_lengths() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array(["", ""], pa.string())], names=["s"])
    row = b"\x00\x01" + b"\x00\x00\x00\x00"
    assert bytes(binary_copy(batch)) == HEADER + row + row + TRAILER


def test_an_empty_batch_is_the_header_and_trailer() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([], pa.string())], names=["s"])
    assert bytes(binary_copy(batch)) == HEADER + TRAILER


def test_sliced_arrays_are_read_from_their_offsets() -> None:
    def column(values: list[Any], kind: pa.DataType, skip: int) -> pa.Array:
        """``values`` behind ``skip`` others: a slice whose offset is ``skip``."""
        return pa.array([values[0]] * skip + values + values, kind).slice(skip, len(values))

    values: dict[str, tuple[list[Any], pa.DataType]] = {
        "d": ([0.5, None, -1.0], pa.float64()),
        "f": ([2.5, 1.0, None], pa.float32()),
        "i": ([None, 3, 4], pa.int32()),
        "b": ([True, None, False], pa.bool_()),
        "s": (["x", "", None], pa.string()),
        "t": (["é", "ü", "ß"], pa.string()),
    }
    fresh = pa.RecordBatch.from_arrays([pa.array(v, k) for v, k in values.values()], list(values))
    # Offsets that are not whole bytes of a bitmap, nor the same in every column.
    offsets = [3, 5, 11, 13, 7, 9]
    sliced = pa.RecordBatch.from_arrays(
        [column(v, k, s) for (v, k), s in zip(values.values(), offsets, strict=True)],
        list(values),
    )
    assert [c.offset for c in sliced.columns] == offsets
    assert bytes(binary_copy(sliced)) == bytes(binary_copy(fresh))


def test_a_type_binary_copy_is_not_given_is_refused_by_column() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([1], pa.int64())], names=["big"])
    with pytest.raises(TypeError, match="column 'big' is int64; binary COPY takes double"):
        binary_copy(batch)


# -- through PostgreSQL -----------------------------------------------------------------------

TYPES = {
    "double": "DOUBLE PRECISION",
    "float": "REAL",
    "int32": "INTEGER",
    "bool": "BOOLEAN",
    "string": "TEXT",
}


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One cluster for the module (initdb costs seconds); each test gets its own database."""
    with running_postgres() as server:
        yield server


def copied_back(url: str, batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    """``batch`` loaded into a new table with binary COPY, then its rows selected in order of
    the first column."""
    typed = ", ".join(f"{f.name} {TYPES[str(f.type)]}" for f in batch.schema)
    names = ", ".join(batch.schema.names)
    with psycopg.connect(url, client_encoding=CLIENT_ENCODING) as connection:
        connection.execute(f"CREATE TABLE t ({typed})".encode())
        sql = f"COPY t ({names}) FROM STDIN WITH (FORMAT binary)"
        with connection.cursor() as cursor, cursor.copy(sql.encode()) as copy:
            copy.write(binary_copy(batch))
        order = batch.schema.names[0]
        # Binary results: a REAL comes back as its own float32 value, not its shortest text.
        with connection.cursor(binary=True) as cursor:
            return cursor.execute(f"SELECT {names} FROM t ORDER BY {order}".encode()).fetchall()


def same(got: Any, expected: Any) -> bool:
    """Equal, NaN to NaN, and -0.0 only to -0.0."""
    if isinstance(expected, float):
        if math.isnan(expected):
            return isinstance(got, float) and math.isnan(got)
        return got == expected and math.copysign(1, got) == math.copysign(1, expected)
    return bool(got == expected)


def assert_rows(rows: list[tuple[Any, ...]], batch: pa.RecordBatch) -> None:
    expected = list(zip(*(c.to_pylist() for c in batch.columns), strict=True))
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected, strict=True):
        assert all(same(g, w) for g, w in zip(got, want, strict=True)), (got, want)


@pytest.mark.parametrize("encoding", [None, "SQL_ASCII"])
def test_hostile_values_round_trip_through_postgres(
    pg: PostgresServer, encoding: str | None
) -> None:
    def sliced(values: list[Any], kind: pa.DataType, skip: int) -> pa.Array:
        return pa.array([None] * skip + values, kind).slice(skip)

    texts = ["", None, 'a"b,c', "line\nbreak\r\n", "back\\slash\t\\N", "naïve – ✓ 😀", "NULL"]
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(range(7), pa.int32()),
            sliced([1.5, math.nan, math.inf, -math.inf, None, -0.0, 1e308], pa.float64(), 3),
            pa.array([0.1, math.nan, math.inf, -math.inf, None, 3.4e38, -1.5], pa.float32()),
            sliced([2**31 - 1, -(2**31), 0, None, 1, -1, 42], pa.int32(), 5),
            sliced([True, False, None, True, True, False, True], pa.bool_(), 11),
            sliced(texts, pa.string(), 2),
            pa.array(["abc", "xé", "def", "ghi", "'';", "mno", "\t,\n"], pa.string()),
        ],
        names=["id", "d", "f", "i", "b", "s", "t"],
    )
    url = pg.create_database(f"t_{uuid.uuid4().hex[:12]}", encoding)
    rows = copied_back(url, batch)
    assert_rows(rows, batch)  # a REAL against the float32 value Arrow holds
    assert rows[0][5] == "" and rows[1][5] is None  # an empty string is not NULL
    assert rows[6][5] == "NULL"


def test_random_batches_with_nulls_everywhere_round_trip(pg: PostgresServer) -> None:
    rng = np.random.default_rng(7)
    n = 2000
    alphabet = list("abc,\"'\\\n\t é€😀")

    def holes(values: pa.Array) -> pa.Array:
        """``values`` with about a fifth of them NULL, sliced off a longer array."""
        missing = rng.random(n) < 0.2
        kept = [None if m else v for v, m in zip(values.to_pylist(), missing, strict=True)]
        return pa.array([None] * 3 + kept, values.type).slice(3)

    words = ["".join(rng.choice(alphabet, size=rng.integers(0, 20))) for _ in range(n)]
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(range(n), pa.int32()),
            holes(pa.array(rng.normal(size=n), pa.float64())),
            holes(pa.array(rng.normal(size=n).astype(np.float32), pa.float32())),
            holes(pa.array(rng.integers(-(2**31), 2**31 - 1, size=n), pa.int32())),
            holes(pa.array(rng.random(n) < 0.5, pa.bool_())),
            holes(pa.array(words, pa.string())),
            pa.array(words, pa.string()),
            pa.array(rng.normal(size=n), pa.float64()),
        ],
        names=["id", "d", "f", "i", "b", "s", "w", "x"],
    )
    assert_rows(copied_back(pg.create_database(f"t_{uuid.uuid4().hex[:12]}"), batch), batch)
