"""The prediction log's columns, defined once: the writer builds them, stores and readers use them.

A model version's predictions are one flat Arrow schema (docs/architecture.md, "Prediction log"):

``logged_at`` float64 unix seconds (UTC); ``request_id`` string; ``instance`` int32 (index in
the request); ``protocol`` string ('v1' or 'v2'); ``label`` string (the predicted class);
``confidence_level``, ``interval_width`` (upper - lower of the predicted class) float64;
``set_size`` int32; ``latency_s`` float64 (the request's latency); then, in the model's order,
``features.<name>`` (float32 for a numeric feature, string for a categorical one; null =
missing), per class ``probabilities.<class>``, ``lower.<class>``, ``upper.<class>`` (float64)
and ``prediction_set.<class>`` (bool), then ``context.<name>`` (string; null = not given) for
each context attribute the model's sensitive columns name (never a model input).

The Parquet store keeps ``model``, ``version`` and ``date`` in the hive path
(``model=M/version=V/date=YYYY-MM-DD``), not in the files; readers add them back.

Feedback labels are a second schema: ``received_at``, ``request_id``, ``instance``, ``label``
(the path holds ``model`` and ``date``); a later label for a prediction replaces an earlier one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import pyarrow as pa

#: The layout version, written into every file's metadata; readers refuse a newer one.
SCHEMA_VERSION: Final = 2
#: File (schema) metadata keys.
META_SCHEMA_VERSION: Final = b"probserve.schema_version"
META_MODEL: Final = b"probserve.model"
META_VERSION: Final = b"probserve.version"
META_DATE: Final = b"probserve.date"
META_KIND: Final = b"probserve.kind"

Kind = Literal["predictions", "feedback"]

#: The scalar columns every prediction row has, in file order.
BASE_FIELDS: Final[tuple[tuple[str, pa.DataType], ...]] = (
    ("logged_at", pa.float64()),
    ("request_id", pa.string()),
    ("instance", pa.int32()),
    ("protocol", pa.string()),
    ("label", pa.string()),
    ("confidence_level", pa.float64()),
    ("interval_width", pa.float64()),
    ("set_size", pa.int32()),
    ("latency_s", pa.float64()),
)
BASE_NAMES: Final = tuple(name for name, _ in BASE_FIELDS)

FEATURE_PREFIX: Final = "features."
PROBABILITY_PREFIX: Final = "probabilities."
LOWER_PREFIX: Final = "lower."
UPPER_PREFIX: Final = "upper."
SET_PREFIX: Final = "prediction_set."
#: Per-instance request context attributes (kept out of the model), logged as string columns.
CONTEXT_PREFIX: Final = "context."

FEEDBACK_SCHEMA: Final = pa.schema(
    [
        ("received_at", pa.float64()),
        ("request_id", pa.string()),
        ("instance", pa.int32()),
        ("label", pa.string()),
    ]
)

FeatureKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class Columns:
    """The column layout of one model version: its features (with kinds), classes and context
    attributes."""

    features: tuple[tuple[str, FeatureKind], ...]
    classes: tuple[str, ...]
    context: tuple[str, ...] = ()

    def schema(self) -> pa.Schema:
        """The flat Arrow schema of this version's prediction rows."""
        return _schema(self)

    def _build_schema(self) -> pa.Schema:
        fields = [pa.field(name, kind) for name, kind in BASE_FIELDS]
        for name, kind in self.features:
            arrow = pa.float32() if kind == "numeric" else pa.string()
            fields.append(pa.field(FEATURE_PREFIX + name, arrow))
        for prefix, arrow in (
            (PROBABILITY_PREFIX, pa.float64()),
            (LOWER_PREFIX, pa.float64()),
            (UPPER_PREFIX, pa.float64()),
            (SET_PREFIX, pa.bool_()),
        ):
            fields += [pa.field(prefix + c, arrow) for c in self.classes]
        fields += [pa.field(CONTEXT_PREFIX + name, pa.string()) for name in self.context]
        return pa.schema(fields)

    def to_json(self) -> str:
        """A compact description (for PostgreSQL's catalog table)."""
        return json.dumps(
            {"features": self.features, "classes": self.classes, "context": self.context}
        )

    @staticmethod
    def from_json(text: str) -> Columns:
        """The inverse of ``to_json``; ValueError on anything else."""
        data = json.loads(text)
        features = tuple((str(n), _kind(k)) for n, k in data["features"])
        context = tuple(str(c) for c in data.get("context", ()))
        return Columns(features, tuple(str(c) for c in data["classes"]), context)

    @staticmethod
    def from_schema(schema: pa.Schema) -> Columns:
        """The layout a prediction schema was built from."""
        features: list[tuple[str, FeatureKind]] = []
        classes: list[str] = []
        context: list[str] = []
        for field in schema:
            if field.name.startswith(FEATURE_PREFIX):
                kind: FeatureKind = "numeric" if pa.types.is_floating(field.type) else "categorical"
                features.append((field.name.removeprefix(FEATURE_PREFIX), kind))
            elif field.name.startswith(PROBABILITY_PREFIX):
                classes.append(field.name.removeprefix(PROBABILITY_PREFIX))
            elif field.name.startswith(CONTEXT_PREFIX):
                context.append(field.name.removeprefix(CONTEXT_PREFIX))
        return Columns(tuple(features), tuple(classes), tuple(context))


@functools.lru_cache(maxsize=256)
def _schema(columns: Columns) -> pa.Schema:
    """One schema per layout, built once: the writer asks for it on every flush."""
    return columns._build_schema()


def _kind(value: object) -> FeatureKind:
    if value == "numeric":
        return "numeric"
    if value == "categorical":
        return "categorical"
    raise ValueError(f"unknown feature kind {value!r}")


def file_metadata(kind: Kind, model: str, version: int | None, date: str) -> dict[bytes, bytes]:
    """The metadata every spool and segment carries: layout version, kind and partition."""
    meta = {
        META_SCHEMA_VERSION: str(SCHEMA_VERSION).encode(),
        META_KIND: kind.encode(),
        META_MODEL: model.encode(),
        META_DATE: date.encode(),
    }
    if version is not None:
        meta[META_VERSION] = str(version).encode()
    return meta


def check_schema_version(metadata: dict[bytes, bytes] | None) -> None:
    """Refuse a file written by a newer layout (SchemaTooNew)."""
    found = int((metadata or {}).get(META_SCHEMA_VERSION, b"0") or 0)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the prediction log has layout version {found}; this code knows up to "
            f"{SCHEMA_VERSION} (a newer probserve wrote it)"
        )


def context_column(name: str) -> str:
    """The log column of the per-instance context attribute ``name``."""
    return CONTEXT_PREFIX + name


def class_columns(prefix: str, classes: Sequence[str]) -> list[str]:
    """The per-class column names under ``prefix``."""
    return [prefix + c for c in classes]


class SchemaTooNew(RuntimeError):
    """The log was written by a newer layout than this code knows."""
