"""The model bundle manifest: the one contract training writes and service and monitoring read.

Never parse ``manifest.json`` by hand anywhere else: use :func:`read_manifest` and the models here.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Schema written by this trainer. 2: the reference's model-output columns are computed on
#: held-out rows and the temperatures are fitted for the ensemble mean (docs/architecture.md).
SCHEMA_VERSION: Literal[2] = 2
#: Schemas the service still reads; version 1 bundles keep serving unchanged.
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
#: First schema whose reference.parquet model outputs come from held-out rows.
HELD_OUT_REFERENCE_SCHEMA = 2

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
REFERENCE_FILE = "reference.parquet"
REPORT_DIR = "report"

#: Name of the single ONNX output: per-member calibrated probabilities, shape [N, K, C].
MEMBER_PROBABILITIES_OUTPUT = "member_probabilities"

#: Columns that reference.parquet holds besides the raw features.
REFERENCE_LABEL_COLUMN = "__label__"
REFERENCE_PREDICTION_COLUMN = "__prediction__"
REFERENCE_PROBABILITY_PREFIX = "__proba__"
REFERENCE_INTERVAL_WIDTH_COLUMN = "__interval_width__"
#: Size of the conformal prediction set at the reference level (schema 2 on).
REFERENCE_SET_SIZE_COLUMN = "__set_size__"
#: Which split a reference row came from (schema 2 on): the output columns are held-out rows.
REFERENCE_SPLIT_COLUMN = "__split__"
#: Prefix of the columns holding the sensitive columns kept out of the model (source "context"),
#: as text (service.fairness.group_text; missing is null), so the drift job can slice the
#: reference by them.
REFERENCE_CONTEXT_PREFIX = "__context__"

FeatureValue = float | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericFeature(_Strict):
    """A float32 input; missing values are imputed inside the graph with ``mean``."""

    name: str = Field(min_length=1)
    kind: Literal["numeric"] = "numeric"
    mean: float
    std: float = Field(gt=0)


class CategoricalFeature(_Strict):
    """A string input; null, empty or unseen values go to the graph's unknown bucket."""

    name: str = Field(min_length=1)
    kind: Literal["categorical"] = "categorical"
    categories: list[str] = Field(min_length=1)


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="kind")]


class Calibration(_Strict):
    """What the service needs to turn member probabilities into intervals and sets."""

    #: Per-member temperatures, already applied inside the graph (kept for the record).
    temperatures: list[float]
    #: Split used to fit the temperatures (disjoint from the conformal split).
    temperature_split: Literal["validation"] = "validation"
    #: What the temperatures were fitted for: "member", each member's own NLL (schema 1, whose
    #: averaged probabilities come out underconfident); "ensemble_mean", the NLL of the mean of
    #: the member probabilities, which is what the service serves.
    temperature_objective: Literal["member", "ensemble_mean"] = "member"
    #: Conformal non-conformity score: LAC, ``1 - p_mean(true class)``.
    conformal_score: Literal["lac"] = "lac"
    #: Scores of the held-out calibration split, sorted ascending.
    conformal_scores: list[float] = Field(min_length=1)
    #: Interval method: logit-space mean +- Student t (K-1 dof) times member spread.
    interval_method: Literal["logit_t"] = "logit_t"

    @model_validator(mode="after")
    def _scores_sorted(self) -> Calibration:
        s = self.conformal_scores
        if any(b < a for a, b in itertools.pairwise(s)):
            raise ValueError("conformal_scores must be sorted ascending")
        return self


class VerificationSample(_Strict):
    """Rows the loader runs through the graph; outputs must match within ``tolerance``."""

    #: Column-wise raw inputs, feature name -> values (None is a missing value).
    inputs: dict[str, list[FeatureValue]]
    #: Expected member probabilities, [N, K, C].
    outputs: list[list[list[float]]]
    tolerance: float = 1e-4


#: Most groups a sensitive column names; rarer values are sliced together as ``other``, which
#: keeps metric labels and log columns bounded whatever the data holds.
MAX_SENSITIVE_GROUPS = 20
#: The group every value outside a sensitive column's ``groups`` is counted in.
OTHER_GROUP = "other"


class SensitiveColumn(_Strict):
    """A column fairness figures are sliced by (``probserve train --sensitive``).

    ``feature``: a model input, sliced from the logged features. ``context``: kept out of the
    model (``--exclude``); requests carry it as a context attribute, logged beside the features.
    """

    name: str = Field(min_length=1, max_length=128)
    source: Literal["feature", "context"]
    #: The training data's groups, largest first (at most MAX_SENSITIVE_GROUPS).
    groups: list[str] = Field(min_length=1, max_length=MAX_SENSITIVE_GROUPS)


class Manifest(_Strict):
    """Everything about a bundle except the weights, which live in ``model.onnx``."""

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    created_at: datetime
    task: Literal["classification"] = "classification"
    target: str
    features: list[Feature] = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    members: int = Field(ge=2)
    output: str = MEMBER_PROBABILITIES_OUTPUT
    calibration: Calibration
    metrics: dict[str, float] = Field(default_factory=dict)
    training: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    data_fingerprint: str
    library_versions: dict[str, str] = Field(default_factory=dict)
    sample: VerificationSample
    #: Columns to slice fairness figures by; empty for bundles trained without --sensitive.
    sensitive: list[SensitiveColumn] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [f.name for f in self.features]
        for column in self.sensitive:
            if (column.source == "feature") != (column.name in names):
                raise ValueError(
                    f"sensitive column {column.name!r}: source 'feature' must name a model "
                    "input and source 'context' must not"
                )
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class labels must be unique")
        if len(self.calibration.temperatures) != self.members:
            raise ValueError("calibration.temperatures must have one entry per member")
        if set(self.sample.inputs) != set(names):
            raise ValueError("sample.inputs must hold exactly the features")
        return self

    @property
    def reference_outputs_held_out(self) -> bool:
        """True when reference.parquet's model-output columns were computed on held-out rows.

        Schema 1 bundles computed them on the training rows the members fitted, which look more
        certain than any new row; drift on those columns is then expected on honest traffic.
        """
        return self.schema_version >= HELD_OUT_REFERENCE_SCHEMA

    # Cached: the codecs read these on every request, and the model is frozen. Shared lists,
    # never to be mutated. A copy made with other features must not keep them: model_copy
    # drops them.
    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy (pydantic's), without the values cached from this manifest's features."""
        copy = super().model_copy(update=update, deep=deep)
        for name in _FEATURE_CACHES:
            copy.__dict__.pop(name, None)
        return copy

    @cached_property
    def feature_names(self) -> list[str]:
        """Feature names in graph input order."""
        return [f.name for f in self.features]

    @cached_property
    def features_by_name(self) -> dict[str, Feature]:
        """Each feature by its name."""
        return {f.name: f for f in self.features}

    @cached_property
    def numeric_feature_names(self) -> list[str]:
        """Names of the numeric features, in graph input order."""
        return [f.name for f in self.features if not isinstance(f, CategoricalFeature)]

    @cached_property
    def categorical_feature_names(self) -> list[str]:
        """Names of the categorical features, in graph input order."""
        return [f.name for f in self.features if isinstance(f, CategoricalFeature)]


#: The Manifest properties cached from ``features``.
_FEATURE_CACHES = (
    "feature_names",
    "features_by_name",
    "numeric_feature_names",
    "categorical_feature_names",
)


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or does not match the schema."""


def read_manifest(bundle_dir: Path) -> Manifest:
    """Read and validate ``bundle_dir/manifest.json``; :class:`ManifestError` says why not."""
    path = bundle_dir / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return Manifest.model_validate_json(raw)
    except ValueError as exc:
        raise ManifestError(f"{path} does not match the manifest schema: {exc}") from exc


def write_manifest(bundle_dir: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` (pretty, stable key order) into ``bundle_dir``."""
    (bundle_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
