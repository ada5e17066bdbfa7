"""A row of the training data, sent as pandas writes it, is accepted by both protocols.

The general rule: for every test data set, the frame the trainer reads from a
CSV (``training.data.load_dataset``) is written back with ``df.to_json(orient="records")``; every
row must be accepted by the native API, and the same frame as V2 tensors by the V2 API, through
the in-process service with a bundle whose features were fitted by the trainer's own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from service.bundle import CategoricalFeature, read_manifest
from tests.service.conftest import ServiceFactory
from training.bundle_writer import write_bundle
from training.data import load_dataset, read_table, synthetic_frame
from training.onnx_graph import EnsembleWeights
from training.preprocess import encoded_width, fit_features

CHUNK = 50  # rows per request: HTTP_TEST_SETTINGS allow 50


def _mixed(rows: int = 120) -> pd.DataFrame:
    """Every column kind the trainer infers, with missing values in each."""
    rng = np.random.default_rng(11)
    flag = rng.random(rows) < 0.5
    flag_missing = pd.Series(flag, dtype=object)
    flag_missing[rng.random(rows) < 0.15] = None
    count = pd.Series(rng.integers(0, 9, rows), dtype="Int64")
    count[rng.random(rows) < 0.1] = pd.NA
    ratio = rng.normal(size=rows)
    ratio[rng.random(rows) < 0.1] = np.nan
    city = pd.Series(rng.choice(["Lyon", "Paris", "Zürich", "007"], rows), dtype=object)
    city[rng.random(rows) < 0.1] = None
    return pd.DataFrame(
        {
            "flag": flag,  # bool column, no missing: read back as bool dtype
            "flag_missing": flag_missing,  # True/False/empty: read back as object
            "always": np.ones(rows, dtype=bool),  # one category only ("True")
            "age": rng.integers(18, 90, rows),  # int
            "count": count,  # int with gaps: read back as float
            "ratio": ratio,  # float with NaN
            "city": city,  # strings, one that looks like a number, with missing
            "outcome": rng.choice(["churn", "stay"], rows),
        }
    )


def _synthetic() -> pd.DataFrame:
    """The training tests' mixed CSV: synthetic data, a bool flag, missing values."""
    frame, target, _ = synthetic_frame(200, seed=7)
    rng = np.random.default_rng(7)
    frame = frame.copy()
    frame.loc[rng.random(len(frame)) < 0.1, "x1"] = np.nan
    colour = frame["colour"].astype(object)
    colour[rng.random(len(frame)) < 0.1] = None
    frame["colour"] = colour
    frame["flag"] = rng.random(len(frame)) < 0.5
    frame["outcome"] = target
    return frame


def _breast_cancer() -> pd.DataFrame:
    data = load_dataset("breast_cancer")
    frame = data.frame.copy()
    frame["outcome"] = [data.classes[i] for i in data.labels]
    return frame


DATASETS = {"mixed": _mixed, "synthetic": _synthetic, "breast_cancer": _breast_cancer}


def _bundle(csv: Path, repository: Path) -> None:
    """A bundle whose features the trainer fitted on the CSV (random weights: only the
    acceptance of rows is under test, not the model's quality)."""
    data = load_dataset(str(csv), target="outcome")
    features = fit_features(data.frame, data.numeric, data.categorical)
    rng = np.random.default_rng(0)
    members, hidden, width, classes = 2, 4, encoded_width(features), len(data.classes)
    weights = EnsembleWeights(
        layers=[
            (
                rng.normal(0, 0.5, (members, width, hidden)).astype(np.float32),
                np.zeros((members, hidden), np.float32),
            ),
            (
                rng.normal(0, 0.5, (members, hidden, classes)).astype(np.float32),
                np.zeros((members, classes), np.float32),
            ),
        ],
        temperatures=np.ones(members, np.float32),
    )
    head = data.frame.head(3)
    sample = {c: [None if pd.isna(v) else v for v in head[c].tolist()] for c in head.columns}
    write_bundle(
        repository,
        "data",
        features=features,
        classes=data.classes,
        target="outcome",
        weights=weights,
        conformal_scores=np.sort(rng.uniform(0, 1, 50)),
        metrics={"accuracy": 0.5},
        training_params={"members": members},
        data_fingerprint=data.fingerprint(),
        reference=data.frame.head(20),
        sample_inputs=sample,
    )


def _v2_tensors(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One tensor per column, as a client builds them from the frame (values via pandas' JSON)."""
    records = orjson.loads(frame.to_json(orient="records"))
    tensors = []
    for column in frame.columns:
        data = [r[column] for r in records]
        dtype = frame[column].dtype
        if pd.api.types.is_bool_dtype(dtype):
            datatype = "BOOL"  # what tritonclient sends for a numpy bool array
        elif pd.api.types.is_numeric_dtype(dtype):
            datatype = "FP64"
        else:
            datatype = "BYTES"
        tensors.append({"name": column, "datatype": datatype, "shape": [len(data)], "data": data})
    return tensors


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_training_row_written_by_pandas_is_accepted(
    dataset: str, tmp_path: Path, service_factory: ServiceFactory
) -> None:
    csv = tmp_path / f"{dataset}.csv"
    DATASETS[dataset]().to_csv(csv, index=False)
    repository = tmp_path / "models"
    _bundle(csv, repository)
    if dataset != "breast_cancer":  # the frames with a True/False column really have one
        manifest = read_manifest(repository / "data" / "1")
        kinds = {f.name: f for f in manifest.features}
        assert isinstance(kinds["flag"], CategoricalFeature)
        assert kinds["flag"].categories == ["False", "True"]
    # The frame exactly as the trainer reads it (same reader, same file), minus the target.
    frame = read_table(csv).drop(columns=["outcome"])
    service = service_factory(repository)
    for start in range(0, len(frame), CHUNK):
        chunk = frame.iloc[start : start + CHUNK]
        body = b'{"instances": ' + chunk.to_json(orient="records").encode() + b"}"
        native = service.post(
            "/v1/models/data/predict", content=body, headers={"content-type": "application/json"}
        )
        assert native.status_code == 200, (start, native.text)
        assert len(native.json()["predictions"]) == len(chunk)
        v2 = service.post("/v2/models/data/infer", json={"inputs": _v2_tensors(chunk)})
        assert v2.status_code == 200, (start, v2.text)
        assert v2.json()["outputs"][0]["shape"][0] == len(chunk)
