"""One instance's explanation, as arrays (encode_explanation turns it into JSON-able values)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class InstanceExplanation:
    """Attributions of the served probability of every class to every feature, for one row.

    ``attributions`` and its bounds are [F, C]; ``member_attributions`` [F, K, C] keeps each
    member's own, from which the bounds (and global importance) are computed.
    """

    label: str
    prediction: NDArray[np.float64]  # [C], the served probability
    base_values: NDArray[np.float64]  # [C], expected served probability over the background
    attributions: NDArray[np.float64]  # [F, C], the members' mean
    lower: NDArray[np.float64]  # [F, C]
    upper: NDArray[np.float64]  # [F, C]
    member_attributions: NDArray[np.float64]  # [F, K, C]
    method: str  # "exact" or "permutation(n=...)"
    confidence_level: float

    @property
    def additivity_error(self) -> NDArray[np.float64]:
        """Per class: sum of attributions minus (prediction - base value); ~1e-16 when exact."""
        error: NDArray[np.float64] = self.attributions.sum(axis=0) - (
            self.prediction - self.base_values
        )
        return error
