"""The compared columns: reference.parquet and the prediction log mapped to one shape.

Features are typed from the bundle manifest, never guessed from data. Categorical values are
mapped onto the manifest's categories plus two buckets, so a high-cardinality or all-new column
stays bounded and a column of missing values is never empty (Evidently refuses empty columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from service.bundle import (
    CategoricalFeature,
    Manifest,
    NumericFeature,
)
from service.bundle.manifest import (
    REFERENCE_INTERVAL_WIDTH_COLUMN,
    REFERENCE_PROBABILITY_PREFIX,
    REFERENCE_SET_SIZE_COLUMN,
)

#: Bucket of a categorical value the manifest does not list (the graph's unknown bucket too).
UNSEEN = "__unseen__"
#: Bucket of a missing categorical value.
MISSING = "__missing__"
#: Compared names of the two model-output columns that are not probabilities.
INTERVAL_WIDTH = REFERENCE_INTERVAL_WIDTH_COLUMN
SET_SIZE = REFERENCE_SET_SIZE_COLUMN

#: Prediction-log column names of the model outputs (service.predlog's reader contract).
LOG_INTERVAL_WIDTH = "interval_width"
LOG_SET_SIZE = "set_size"
LOG_LABEL = "label"
LOG_TRUE_LABEL = "true_label"


class ColumnMismatch(ValueError):
    """The current window lacks columns the bundle needs (a log written by another bundle)."""


@dataclass(frozen=True)
class Compared:
    """Reference and current frames with the same compared columns, and their kinds."""

    reference: pd.DataFrame
    current: pd.DataFrame
    numeric_features: list[str]
    categorical: list[str]
    outputs: list[str]

    @property
    def numeric(self) -> list[str]:
        """Every numeric compared column: numeric features, then the model outputs."""
        return self.numeric_features + self.outputs

    @property
    def columns(self) -> list[str]:
        """Every compared column: features in manifest kinds, then the model outputs."""
        return self.numeric_features + self.categorical + self.outputs


def probability_columns(manifest: Manifest) -> list[str]:
    """``__proba__<class>`` per class, in the manifest's class order."""
    return [f"{REFERENCE_PROBABILITY_PREFIX}{c}" for c in manifest.classes]


def _categorical(values: pd.Series, feature: CategoricalFeature) -> pd.Series:
    known = set(feature.categories)
    text = values.astype(object)
    missing = text.isna() | (text.astype(str) == "")
    mapped = text.astype(str).where(text.astype(str).isin(known), UNSEEN)
    return mapped.where(~missing, MISSING).astype(object)


def _features(frame: pd.DataFrame, manifest: Manifest, side: str) -> dict[str, pd.Series]:
    absent = [f.name for f in manifest.features if f.name not in frame.columns]
    if absent:
        raise ColumnMismatch(
            f"the {side} has no column for feature(s) {', '.join(absent)}: it was not written "
            f"for this bundle of {manifest.name}"
        )
    if (
        side == "prediction log"
        and len(frame)
        and not any(frame[f.name].notna().any() for f in manifest.features)
    ):
        # The reader fills a feature the logged rows lack with missing values: when no row has
        # any feature of this bundle, the rows were served by a bundle with other features.
        raise ColumnMismatch(
            f"no logged row of {manifest.name} holds any of the bundle's features "
            f"({', '.join(manifest.feature_names)}): the log was written by another bundle"
        )
    out: dict[str, pd.Series] = {}
    for feature in manifest.features:
        column = frame[feature.name]
        if isinstance(feature, NumericFeature):
            out[feature.name] = pd.to_numeric(column, errors="coerce").astype(np.float64)
        else:
            out[feature.name] = _categorical(column, feature)
    return out


def _outputs(
    frame: pd.DataFrame, manifest: Manifest, side: str, width: str, size: str | None
) -> dict[str, pd.Series]:
    wanted = [*probability_columns(manifest), width] + ([size] if size else [])
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise ColumnMismatch(
            f"the {side} has no column(s) {', '.join(absent)}: its classes or outputs differ "
            f"from the bundle of {manifest.name}"
        )
    out = {
        c: pd.to_numeric(frame[c], errors="coerce").astype(np.float64)
        for c in probability_columns(manifest)
    }
    out[INTERVAL_WIDTH] = pd.to_numeric(frame[width], errors="coerce").astype(np.float64)
    if size is not None:
        out[SET_SIZE] = pd.to_numeric(frame[size], errors="coerce").astype(np.float64)
    return out


def compared_frames(manifest: Manifest, reference: pd.DataFrame, current: pd.DataFrame) -> Compared:
    """Map reference.parquet and a log window to the same compared columns.

    The set size is compared only when the reference has it (bundle schema 2 and later).
    """
    size = SET_SIZE in reference.columns
    ref = {
        **_features(reference, manifest, "reference data"),
        **_outputs(
            reference, manifest, "reference data", INTERVAL_WIDTH, SET_SIZE if size else None
        ),
    }
    cur = {
        **_features(current, manifest, "prediction log"),
        **_outputs(
            current,
            manifest,
            "prediction log",
            LOG_INTERVAL_WIDTH,
            LOG_SET_SIZE if size else None,
        ),
    }
    features = {f.name for f in manifest.features}
    return Compared(
        reference=pd.DataFrame(ref).reset_index(drop=True),
        current=pd.DataFrame(cur).reset_index(drop=True),
        numeric_features=[f.name for f in manifest.features if isinstance(f, NumericFeature)],
        categorical=[f.name for f in manifest.features if isinstance(f, CategoricalFeature)],
        outputs=[c for c in ref if c not in features],
    )
