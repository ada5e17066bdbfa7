"""Turn trusted column values (manifest samples, reference rows) into graph input arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from service.bundle.manifest import Feature, FeatureValue, NumericFeature

#: The string a missing categorical becomes; the graph maps it to the unknown bucket.
MISSING_CATEGORY = ""


def graph_columns(
    features: Sequence[Feature], values: Mapping[str, Sequence[FeatureValue]]
) -> dict[str, NDArray[np.generic]]:
    """Graph input arrays: float32 [N, 1] (None -> NaN) or object [N, 1] (None -> "").

    For values already known to be valid; request payloads go through the service codecs instead.
    """
    columns: dict[str, NDArray[np.generic]] = {}
    for f in features:
        raw = values[f.name]
        if isinstance(f, NumericFeature):
            columns[f.name] = np.array(
                [np.nan if v is None else float(v) for v in raw], dtype=np.float32
            ).reshape(-1, 1)
        else:
            columns[f.name] = np.array(
                [MISSING_CATEGORY if v is None else str(v) for v in raw], dtype=object
            ).reshape(-1, 1)
    return columns
