"""Build a Prediction by hand, as the pipeline would, for tests of what reads one."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from service.types import FeatureBatch, InferenceRequest, ModelHandle, Prediction, Uncertainty


def prediction_of(
    handle: ModelHandle,
    batch: FeatureBatch,
    probabilities: NDArray[np.float64],
    *,
    lower: NDArray[np.float64] | None = None,
    upper: NDArray[np.float64] | None = None,
    prediction_sets: NDArray[np.bool_] | None = None,
    level: float = 0.9,
    request: InferenceRequest | None = None,
    request_id: str = "rid",
    protocol: str = "v1",
) -> Prediction:
    """A prediction whose labels are the argmax of ``probabilities`` (bounds default to it)."""
    index = probabilities.argmax(axis=1)
    labels = np.array(handle.manifest.classes, dtype=object)[index]
    uncertainty = Uncertainty(
        probabilities,
        probabilities if lower is None else lower,
        probabilities if upper is None else upper,
        probabilities > 0.5 if prediction_sets is None else prediction_sets,
        index,
        labels,
    )
    if request is None:
        request = InferenceRequest(batch, level)
    return Prediction(handle, request, uncertainty, request_id, protocol, 0.0, 0.001, 0.0, 0.001)
