"""What the request path needs of one served version, built once at load time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.batching import DynamicBatcher
from service.runtime.model import LoadedModel


@dataclass(frozen=True, eq=False)
class ServedVersion:
    """A loaded model, its batcher and the manifest data the hot path reads, as numpy arrays."""

    model: LoadedModel
    batcher: DynamicBatcher
    #: Class labels as an object array, so ``class_labels[argmax]`` labels a whole batch at once.
    class_labels: NDArray[np.object_]
    #: The calibration split's conformal scores, sorted ascending.
    conformal_scores: NDArray[np.float64]

    @classmethod
    def build(cls, model: LoadedModel, batcher: DynamicBatcher) -> ServedVersion:
        """Precompute the arrays from the manifest."""
        manifest = model.manifest
        labels = np.array(manifest.classes, dtype=object)
        scores = np.asarray(manifest.calibration.conformal_scores, dtype=np.float64)
        return cls(model, batcher, labels, scores)
