"""The model bundle contract: manifest schema and repository layout."""

from service.bundle.manifest import (
    MANIFEST_FILE,
    MEMBER_PROBABILITIES_OUTPUT,
    MODEL_FILE,
    REFERENCE_FILE,
    REPORT_DIR,
    CategoricalFeature,
    Feature,
    Manifest,
    ManifestError,
    NumericFeature,
    read_manifest,
    write_manifest,
)
from service.bundle.repository import (
    RepositoryError,
    bundle_path,
    check_repository,
    model_names,
    model_versions,
    staged_bundle,
)

__all__ = [
    "MANIFEST_FILE",
    "MEMBER_PROBABILITIES_OUTPUT",
    "MODEL_FILE",
    "REFERENCE_FILE",
    "REPORT_DIR",
    "CategoricalFeature",
    "Feature",
    "Manifest",
    "ManifestError",
    "NumericFeature",
    "RepositoryError",
    "bundle_path",
    "check_repository",
    "model_names",
    "model_versions",
    "read_manifest",
    "staged_bundle",
    "write_manifest",
]
