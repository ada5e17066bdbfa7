"""The model bundle contract: manifest schema and repository layout."""

from service.bundle.columns import MISSING_CATEGORY, graph_columns
from service.bundle.manifest import (
    MANIFEST_FILE,
    MEMBER_PROBABILITIES_OUTPUT,
    MODEL_FILE,
    REFERENCE_FILE,
    REPORT_DIR,
    Calibration,
    CategoricalFeature,
    Feature,
    Manifest,
    ManifestError,
    NumericFeature,
    VerificationSample,
    read_manifest,
    write_manifest,
)
from service.bundle.repository import (
    RepositoryError,
    StagedBundle,
    bundle_path,
    check_repository,
    model_names,
    model_versions,
    staged_bundle,
)

__all__ = [
    "MANIFEST_FILE",
    "MEMBER_PROBABILITIES_OUTPUT",
    "MISSING_CATEGORY",
    "MODEL_FILE",
    "REFERENCE_FILE",
    "REPORT_DIR",
    "Calibration",
    "CategoricalFeature",
    "Feature",
    "Manifest",
    "ManifestError",
    "NumericFeature",
    "RepositoryError",
    "StagedBundle",
    "VerificationSample",
    "bundle_path",
    "check_repository",
    "graph_columns",
    "model_names",
    "model_versions",
    "read_manifest",
    "staged_bundle",
    "write_manifest",
]
