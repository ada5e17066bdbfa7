"""Export the trained ensemble as the bundle's ONNX graph and prove it matches PyTorch.

The graph comes from :func:`training.onnx_graph.build_ensemble_graph`. Parity runs the graph with
onnxruntime on raw rows (real ones and random ones with missing values and unseen categories)
and the PyTorch forward pass on the same rows encoded by :func:`encode_features`; any difference
above the tolerance fails the export, before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
from numpy.typing import NDArray

from service.bundle import MEMBER_PROBABILITIES_OUTPUT, CategoricalFeature, Feature, NumericFeature
from training.ensemble import member_logits
from training.onnx_graph import EnsembleWeights, build_ensemble_graph
from training.preprocess import encode_features, graph_inputs

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5
#: A category value outside the training categories, to exercise the unknown bucket. Printable,
#: because some of these rows are stored in the manifest and may travel through JSON and SQL.
UNSEEN_CATEGORY = "<unseen>"


class ParityError(RuntimeError):
    """The ONNX graph and the PyTorch model disagree: the export is not trustworthy."""


@dataclass(frozen=True)
class ParityReport:
    """Rows compared and the largest absolute difference in member probabilities."""

    rows: int
    max_abs_diff: float


def ensemble_weights(
    layers: Sequence[tuple[NDArray[np.float32], NDArray[np.float32]]],
    temperatures: NDArray[np.floating],
) -> EnsembleWeights:
    """The graph builder's weight container from trained layers and fitted temperatures."""
    return EnsembleWeights(
        layers=list(layers), temperatures=np.asarray(temperatures, dtype=np.float32)
    )


def torch_member_probabilities(
    features: Sequence[Feature], weights: EnsembleWeights, rows: pd.DataFrame
) -> NDArray[np.float32]:
    """PyTorch reference output [N, K, C] for raw rows: encode, forward, temperature, softmax."""
    logits = torch.from_numpy(member_logits(weights.layers, encode_features(rows, features)))
    temps = torch.from_numpy(np.asarray(weights.temperatures, dtype=np.float32)).reshape(1, -1, 1)
    with torch.no_grad():
        return torch.softmax(logits / temps, dim=2).numpy()


def onnx_member_probabilities(
    model: onnx.ModelProto, features: Sequence[Feature], rows: pd.DataFrame
) -> NDArray[np.float32]:
    """Run the graph with onnxruntime (CPU) on raw rows -> [N, K, C]."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    out = session.run([MEMBER_PROBABILITIES_OUTPUT], graph_inputs(rows, features))
    return np.asarray(out[0], dtype=np.float32)


def random_rows(features: Sequence[Feature], rows: int, seed: int) -> pd.DataFrame:
    """Raw rows spread over each feature's range, with ~10% missing values and unseen categories."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[float] | list[str | None]] = {}
    for f in features:
        if isinstance(f, NumericFeature):
            values = f.mean + 3.0 * f.std * rng.standard_normal(rows)
            values[rng.random(rows) < 0.1] = np.nan
            columns[f.name] = values.tolist()
        else:
            assert isinstance(f, CategoricalFeature)
            unseen = UNSEEN_CATEGORY
            while unseen in f.categories:
                unseen += "*"
            pool: list[str | None] = [*f.categories, unseen, None]
            columns[f.name] = [pool[i] for i in rng.integers(0, len(pool), rows)]
    return pd.DataFrame(columns)


def export_ensemble(features: Sequence[Feature], weights: EnsembleWeights) -> onnx.ModelProto:
    """Build the single ONNX graph (preprocessing + all members + temperatures)."""
    return build_ensemble_graph(features, weights)


def check_parity(
    model: onnx.ModelProto,
    features: Sequence[Feature],
    weights: EnsembleWeights,
    real_rows: pd.DataFrame,
    *,
    random_count: int = 512,
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
) -> ParityReport:
    """Compare onnxruntime and PyTorch on real and random rows; raise ParityError past tolerance."""
    rows = pd.concat(
        [
            real_rows[[f.name for f in features]].reset_index(drop=True),
            random_rows(features, random_count, seed),
        ],
        ignore_index=True,
    )
    expected = torch_member_probabilities(features, weights, rows)
    actual = onnx_member_probabilities(model, features, rows)
    if expected.shape != actual.shape:
        raise ParityError(f"ONNX output shape {actual.shape} differs from PyTorch {expected.shape}")
    diff = float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64))))
    if not np.isfinite(diff) or diff > tolerance:
        raise ParityError(
            f"ONNX export does not match PyTorch: max abs difference {diff:.3g} > {tolerance:g} "
            f"over {len(rows)} rows; nothing was written"
        )
    log.info("ONNX parity: max abs difference %.3g over %d rows", diff, len(rows))
    return ParityReport(len(rows), diff)
