"""The drift job reads its window compact (float32 and Categorical features): same results.

A real log written by the real writer is read twice, as the job reads it and as the plain
``read_window`` reads it; ``compute_drift`` on the two gives the same summary to the last bit:
column verdicts and scores, the label-free and feedback figures, fairness by a categorical and
a numeric sensitive feature, and the same seeded sample of a window above ``--max-rows``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.drift.computing import compute_drift
from monitoring.drift.reading import read_current
from monitoring.drift.settings import DriftSettings
from service.bundle import SensitiveColumn
from service.predlog.reader import FeatureType, read_window
from tests.monitoring.conftest import DriftBundle
from tests.monitoring.test_drift_cli import write_log


@pytest.fixture
def logged(drift_bundle: DriftBundle, tmp_path: Path) -> tuple[DriftBundle, str]:
    """A 400-row window of which 150 labelled, 100 rows at x1 = 1 (a group of its own),
    a few colours unseen or missing; logged to Parquet."""
    window = drift_bundle.log_window(np.random.default_rng(41), 400, labelled=150)
    window.loc[0:99, "x1"] = 1.0
    window.loc[100:109, "colour"] = "purple"
    window.loc[110:114, "colour"] = None
    window.loc[115:119, "x2"] = np.nan
    url = str(tmp_path / "predictions")
    write_log(drift_bundle, url, window, tmp_path / "spool")
    return drift_bundle, url


@pytest.mark.parametrize("max_rows", [100_000, 150])
def test_compact_window_gives_the_same_summary(
    logged: tuple[DriftBundle, str], max_rows: int
) -> None:
    bundle, url = logged
    manifest = bundle.manifest.model_copy(
        update={
            "sensitive": [
                SensitiveColumn(name="colour", source="feature", groups=["blue", "green", "red"]),
                SensitiveColumn(name="x1", source="feature", groups=["1"]),
            ]
        }
    )
    compact = read_current(url, manifest, version=None, since_seconds=None, last=None)
    assert compact["x1"].dtype == np.float32  # the job's window is the compact one
    assert isinstance(compact["colour"].dtype, pd.CategoricalDtype)
    types: dict[str, FeatureType] = {"x1": "numeric", "x2": "numeric", "colour": "categorical"}
    plain = read_window(url, manifest.name, feature_types=types)
    assert plain["x1"].dtype == np.float64 and plain["colour"].dtype == object
    settings = DriftSettings(max_rows=max_rows)
    reference = bundle.reference()
    expected = compute_drift(manifest, 1, reference, plain, settings).summary
    got = compute_drift(manifest, 1, reference, compact, settings).summary
    assert got.sampled == (max_rows < 400)
    assert got.fairness is not None
    assert got.fairness.columns["x1"].groups["1"].rows == 100
    assert got.fairness.columns["colour"].groups["other"].rows == 10
    assert got.model_dump() == expected.model_dump()
