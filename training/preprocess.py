"""Fit the preprocessing specs on the training split and encode rows exactly like the graph.

The specs are the manifest's :class:`NumericFeature` / :class:`CategoricalFeature`; the graph
(:mod:`training.onnx_graph`) applies them. :func:`encode_features` is the numpy mirror of that
graph's encoding, used to train the network on the same inputs the graph will feed it; the ONNX
parity check after export proves the two agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from service.bundle import CategoricalFeature, Feature, NumericFeature, graph_columns
from service.errors import UsageError

log = logging.getLogger(__name__)

#: Above this many categories a column is probably an identifier or a number read as text.
MANY_CATEGORIES = 200


def fit_features(
    frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
) -> list[Feature]:
    """Feature specs in the frame's column order, fitted on ``frame`` (the training split).

    Numeric: mean and std of the observed values (float32, as the graph computes); a constant
    or all-missing column gets std 1 so it encodes to 0 instead of dividing by zero.
    Categorical: the sorted observed non-missing values; anything else maps to the unknown bucket.
    """
    numeric_set, categorical_set = set(numeric), set(categorical)
    features: list[Feature] = []
    for name in frame.columns:
        if name in numeric_set:
            values = frame[name].to_numpy(dtype=np.float32)
            observed = values[~np.isnan(values)].astype(np.float64)
            mean = float(observed.mean()) if observed.size else 0.0
            std = float(observed.std()) if observed.size else 0.0
            features.append(NumericFeature(name=name, mean=mean, std=std if std > 1e-12 else 1.0))
        elif name in categorical_set:
            seen = sorted({v for v in frame[name].tolist() if isinstance(v, str) and v != ""})
            if not seen:
                raise UsageError(
                    f"categorical column '{name}' has no values in the training split: "
                    "drop the column or supply data for it"
                )
            if len(seen) > MANY_CATEGORIES:
                log.warning(
                    "categorical column %r has %d distinct values: each becomes an input column; "
                    "pass --numeric %s if it is a number, or drop an identifier column",
                    name,
                    len(seen),
                    name,
                )
            features.append(CategoricalFeature(name=name, categories=seen))
        else:
            raise ValueError(f"column {name!r} is neither numeric nor categorical")
    return features


def encoded_width(features: Sequence[Feature]) -> int:
    """Number of encoded columns: one per numeric, categories + 1 (unknown) per categorical."""
    return sum(1 if isinstance(f, NumericFeature) else len(f.categories) + 1 for f in features)


def encode_features(frame: pd.DataFrame, features: Sequence[Feature]) -> NDArray[np.float32]:
    """Encode raw rows to the network's float32 input, in the graph's column order.

    Numerics first (manifest order), then each categorical's one-hot block with the unknown
    column last. Arithmetic is float32 in the same order as the graph (impute, subtract the
    mean, divide by the std) so the results match it to rounding.
    """
    numeric = [f for f in features if isinstance(f, NumericFeature)]
    categorical = [f for f in features if isinstance(f, CategoricalFeature)]
    n = len(frame)
    blocks: list[NDArray[np.float32]] = []
    if numeric:
        raw = np.stack([frame[f.name].to_numpy(dtype=np.float32) for f in numeric], axis=1)
        mean = np.array([f.mean for f in numeric], dtype=np.float32)
        std = np.array([f.std for f in numeric], dtype=np.float32)
        imputed = np.where(np.isnan(raw), mean, raw)
        blocks.append(((imputed - mean) / std).astype(np.float32))
    for f in categorical:
        lookup = {c: i for i, c in enumerate(f.categories)}
        unknown = len(f.categories)
        index = np.array(
            [
                lookup.get(v, unknown) if isinstance(v, str) else unknown
                for v in frame[f.name].tolist()
            ],
            dtype=np.int64,
        )
        onehot = np.zeros((n, unknown + 1), dtype=np.float32)
        onehot[np.arange(n), index] = 1.0
        blocks.append(onehot)
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), dtype=np.float32)


def graph_inputs(
    frame: pd.DataFrame, features: Sequence[Feature]
) -> dict[str, NDArray[np.generic]]:
    """onnxruntime feeds for raw rows, built the way the service builds them from JSON values."""
    return graph_columns(features, json_inputs(frame, features))


def json_inputs(
    frame: pd.DataFrame, features: Sequence[Feature]
) -> dict[str, list[float | str | None]]:
    """Column-wise raw values as the manifest's verification sample holds them (None = missing)."""
    out: dict[str, list[float | str | None]] = {}
    for f in features:
        col: list[float | str | None] = []
        for v in frame[f.name].tolist():
            if isinstance(f, NumericFeature):
                col.append(None if v is None or np.isnan(v) else float(np.float32(v)))
            else:
                col.append(v if isinstance(v, str) else None)
        out[f.name] = col
    return out
