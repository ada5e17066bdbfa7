"""``read_window(compact=True)``: the drift job's narrower window holds the same values.

Numeric features stay float32 and categorical ones come as pandas Categoricals; every other
column is the plain window's. Round trips through the real writer, into a Parquet dataset and a
real PostgreSQL. Expected values are binary fractions, so float32 and float64 agree exactly.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.bundle.manifest import REFERENCE_PROBABILITY_PREFIX as P
from service.predlog import PredictionLog, PredictionRecord
from service.predlog.layout import LOWER_PREFIX, PROBABILITY_PREFIX, UPPER_PREFIX
from service.predlog.reader import FeatureType, read_window
from service.predlog.window import read_parts
from tests.pg_support import PostgresServer, running_postgres
from tests.service.test_predlog import record

TYPES: dict[str, FeatureType] = {"x": "numeric", "c": "categorical"}


def _record(i: int, x: list[float], c: list[str | None], version: int) -> PredictionRecord:
    """Request ``r{i}`` of the reader tests' two-class model, with these feature values."""
    rows = len(x)
    features = {
        "x": np.asarray(x, dtype=np.float32).reshape(rows, 1),
        "c": np.asarray(c, dtype=object).reshape(rows, 1),
    }
    return dataclasses.replace(record(i, rows, version=version), features=features)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One cluster for the module (initdb costs seconds); each test gets its own database."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["parquet", "postgresql"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A prediction log in each store, holding two versions of model m (4 rows)."""
    if request.param == "parquet":
        url = str(tmp_path / "log")
    else:
        server: PostgresServer = request.getfixturevalue("pg")
        url = server.create_database(f"t_{uuid.uuid4().hex[:12]}", None)
    log = PredictionLog(url, spool_dir=tmp_path / "spool")
    log.start()
    try:
        # NaN and None are logged as missing (null).
        assert log.enqueue(_record(1, [0.5, math.nan], ["u", None], version=1))
        assert log.enqueue(_record(2, [-1.25], ["v"], version=2))
        assert log.enqueue(_record(3, [2.0], ["u"], version=2))
    finally:
        log.stop()
    return url


def test_compact_window_hand_computed(log_url: str) -> None:
    frame = read_window(log_url, "m", feature_types=TYPES, compact=True)
    assert frame["x"].dtype == np.float32
    assert isinstance(frame["c"].dtype, pd.CategoricalDtype)
    assert frame["x"].tolist()[:1] + frame["x"].tolist()[2:] == [0.5, -1.25, 2.0]
    assert math.isnan(frame["x"].tolist()[1])
    assert frame["c"].astype(object).tolist()[:1] + frame["c"].astype(object).tolist()[2:] == [
        "u",
        "v",
        "u",
    ]
    assert frame["c"].isna().tolist() == [False, True, False, False]
    assert frame["version"].tolist() == [1, 1, 2, 2]
    # No feedback logged: every true label missing, as None in an object column.
    assert frame["true_label"].dtype == object and frame["true_label"].tolist() == [None] * 4


def test_compact_window_holds_the_plain_windows_values(log_url: str) -> None:
    plain = read_window(log_url, "m", feature_types=TYPES)
    compact = read_window(log_url, "m", feature_types=TYPES, compact=True)
    assert list(compact.columns) == list(plain.columns)
    rest = [c for c in plain.columns if c not in TYPES]
    pd.testing.assert_frame_equal(compact[rest], plain[rest])
    assert compact.attrs == plain.attrs
    np.testing.assert_array_equal(compact["x"].to_numpy(np.float64), plain["x"].to_numpy())
    # Missing is NaN in a Categorical, None in the plain object column: both read as missing.
    assert compact["c"].isna().tolist() == plain["c"].isna().tolist()
    present = plain["c"].notna()
    assert compact["c"][present].astype(object).tolist() == plain["c"][present].tolist()


def test_window_never_reads_the_interval_bounds(log_url: str) -> None:
    parts = read_parts(log_url, "m", skip=(LOWER_PREFIX, UPPER_PREFIX))
    assert [version for version, _, _ in parts] == [1, 2]
    for _, columns, table in parts:
        assert columns.classes == ("a", "b")
        assert not [n for n in table.column_names if n.startswith((LOWER_PREFIX, UPPER_PREFIX))]
        assert f"{PROBABILITY_PREFIX}a" in table.column_names
    whole = read_parts(log_url, "m")
    assert f"{LOWER_PREFIX}a" in whole[0][2].column_names
    assert f"{P}a" in read_window(log_url, "m", compact=True).columns
