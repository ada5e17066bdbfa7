"""``summary.json``: the contract other tools read. Defined once, here.

JSON has no NaN: every float field is finite or null (a model validator refuses anything else).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Bumped when a field changes meaning or disappears.
SUMMARY_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Frozen):
    """First and last ``logged_at`` of the compared rows, ISO 8601 UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    #: ``from`` in JSON (a Python keyword).
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class ColumnDrift(_Frozen):
    """One compared column: Evidently's verdict, or our fallback's when Evidently has none."""

    drift_detected: bool
    score: float
    method: str
    threshold: float


class Pair(_Frozen):
    """A figure of the reference data beside the same figure of the current window."""

    reference: float | None
    current: float | None


class ConformalFigures(_Frozen):
    """Prediction sets against the window's feedback labels, each row at its served level."""

    labelled_rows: int
    #: Sets from the bundle's calibration scores.
    static_coverage: float | None
    static_mean_set_size: float | None
    #: Sets from the adapted scores the servers read during the window (None: none in use).
    adapted_revision: int | None
    adapted_coverage: float | None
    adapted_mean_set_size: float | None
    #: The recalibration this run published (None: adaptation off, or too few labelled rows).
    published_revision: int | None


class Estimate(_Frozen):
    """One group's figure with its bootstrap 95% interval; null values: no row to compute it on."""

    value: float | None
    low: float | None
    high: float | None
    #: Rows the figure is computed on (every row, the labelled rows, or their positives).
    rows: int


class GroupFigures(_Frozen):
    """One group of a sensitive column in the window."""

    rows: int
    labelled_rows: int
    #: Fewer rows than ``min_group_rows``: reported, but its figures are null.
    too_small: bool
    figures: dict[str, Estimate]


class Disparity(_Frozen):
    """The largest gap of one figure between the groups large enough to judge."""

    #: Highest minus lowest group value.
    difference: float
    #: Lowest over highest group value (1 when every group has the same value).
    ratio: float
    lowest: str
    highest: str


class SensitiveFigures(_Frozen):
    """Per-group figures and disparities of one sensitive column."""

    source: Literal["feature", "context"]
    groups: dict[str, GroupFigures]
    disparity: dict[str, Disparity]


class FairnessFigures(_Frozen):
    """Figures sliced by the bundle's sensitive columns (docs/architecture.md, Monitoring)."""

    #: Fewest rows a group (or a figure, for the disparity) needs to be compared.
    min_group_rows: int
    #: Level of the bootstrap intervals.
    confidence: float
    #: Most rows of a group an interval resamples (a seeded sample above that: wider).
    bootstrap_rows: int
    columns: dict[str, SensitiveFigures]

    def floats(self) -> list[tuple[str, float | None]]:
        """Every float, named by its path in summary.json (the no-NaN check)."""
        out: list[tuple[str, float | None]] = []
        for name, column in self.columns.items():
            for group, figures in column.groups.items():
                for figure, e in figures.figures.items():
                    path = f"fairness.columns.{name}.groups.{group}.figures.{figure}"
                    out += [(f"{path}.value", e.value), (f"{path}.low", e.low)]
                    out.append((f"{path}.high", e.high))
            for figure, d in column.disparity.items():
                path = f"fairness.columns.{name}.disparity.{figure}"
                out += [(f"{path}.difference", d.difference), (f"{path}.ratio", d.ratio)]
        return out


class DriftSummary(_Frozen):
    """Everything ``summary.json`` holds; see the drift section of the README."""

    summary_version: int = SUMMARY_VERSION
    model: str
    #: Bundle version whose reference.parquet was the baseline.
    reference_version: int
    #: Versions that served the rows of the current window.
    versions: list[str]
    window: Window
    rows_current: int
    rows_reference: int
    sampled: bool
    dataset_drift: bool
    share_drifted: float
    columns: dict[str, ColumnDrift]
    estimated_accuracy: float
    realized_accuracy: float | None
    labelled_rows: int
    #: Feedback labels received since the window began whose prediction is not in the window
    #: (None: the reader did not say). ``labelled_rows`` are the matched ones.
    feedback_unmatched: int | None = None
    expected_calibration_error: float | None
    mean_interval_width: Pair
    ambiguous_share: Pair
    warnings: list[str]
    #: Realized coverage of the conformal sets from feedback (None before it is computed).
    conformal: ConformalFigures | None = None
    #: Per-group figures of the bundle's sensitive columns (None: the bundle names none).
    fairness: FairnessFigures | None = None

    @model_validator(mode="after")
    def _finite(self) -> DriftSummary:
        floats: list[tuple[str, float | None]] = [
            ("share_drifted", self.share_drifted),
            ("estimated_accuracy", self.estimated_accuracy),
            ("realized_accuracy", self.realized_accuracy),
            ("expected_calibration_error", self.expected_calibration_error),
            ("mean_interval_width.reference", self.mean_interval_width.reference),
            ("mean_interval_width.current", self.mean_interval_width.current),
            ("ambiguous_share.reference", self.ambiguous_share.reference),
            ("ambiguous_share.current", self.ambiguous_share.current),
        ]
        floats += [(f"columns.{n}.score", c.score) for n, c in self.columns.items()]
        floats += [(f"columns.{n}.threshold", c.threshold) for n, c in self.columns.items()]
        if self.fairness is not None:
            floats += self.fairness.floats()
        for name, value in floats:
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} is not finite ({value}); summary.json has no NaN")
        return self

    def to_json_dict(self) -> dict[str, object]:
        """The JSON document, with ``window`` spelled ``{"from", "to"}``."""
        return self.model_dump(mode="json", by_alias=True)
