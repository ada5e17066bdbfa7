"""Helpers of the explanation tests: a tiny trained bundle and rows of its reference data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from numpy.typing import NDArray

from service.bundle import REFERENCE_FILE, graph_columns
from service.runtime import LoadedModel, load_model
from service.types import FeatureBatch
from training.pipeline import TrainConfig, train


def train_tiny_bundle(repository: Path) -> LoadedModel:
    """The synthetic problem (4 numeric, 2 categorical features), trained small and loaded."""
    result = train(
        TrainConfig(
            data="synthetic",
            synthetic_rows=1200,
            model_repository=repository,
            members=4,
            epochs=15,
            hidden=(16, 16),
            progress=False,
            device="cpu",
        )
    )
    return load_model(result.bundle_path)


def reference_columns(model: LoadedModel, start: int, rows: int) -> dict[str, NDArray[np.generic]]:
    """Graph input columns of reference rows ``start .. start + rows`` of the model's bundle."""
    names = model.manifest.feature_names
    table = pq.read_table(model.path / REFERENCE_FILE, columns=names).slice(start, rows)
    return graph_columns(model.manifest.features, {n: table.column(n).to_pylist() for n in names})


def reference_batch(model: LoadedModel, start: int, rows: int) -> FeatureBatch:
    """A FeatureBatch of reference rows, as the codecs would hand it over."""
    return FeatureBatch(columns=reference_columns(model, start, rows), rows=rows)
