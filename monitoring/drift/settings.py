"""Settings of ``probserve drift``: every flag also reads ``PROBSERVE_<FLAG>``."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import UsageError
from service.fairness import BOOTSTRAP_RESAMPLES

#: Same default as the service's writer (docs/architecture.md, Command line).
from service.predlog.urls import DEFAULT_LOG_URL as DEFAULT_LOG_URL  # re-exported for the CLI

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str) -> float:
    """Seconds in ``30s``, ``15m``, ``1h`` or ``2d``; :class:`UsageError` names ``flag``."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(
            f"{flag} must be a positive duration such as 30s, 15m, 1h or 2d; got {text!r}"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_column_values(items: list[str], flag: str) -> dict[str, str]:
    """``["x1=psi", "colour=jensenshannon"]`` -> ``{"x1": "psi", ...}`` (per-column overrides)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UsageError(f"{flag} takes COLUMN=VALUE; got {item!r}")
        out[name.strip()] = value.strip()
    return out


class DriftSettings(BaseSettings):
    """What one drift run needs. The CLI builds it from flags; the environment fills the rest."""

    model_config = SettingsConfigDict(env_prefix="PROBSERVE_", extra="ignore")

    model_repository: Path = Path("models")
    prediction_log_url: str = DEFAULT_LOG_URL
    #: Output directory of one run; None means ``./drift/<model>/<UTC timestamp>/``.
    output: Path | None = None
    workspace: Path | None = Path("drift/workspace")
    pushgateway: str | None = None
    #: Window: the last N rows, or the rows logged in the last ``since_seconds``.
    last: int | None = Field(default=None, ge=1)
    since_seconds: float | None = Field(default=None, gt=0)
    #: Cap on rows compared per side; larger windows are sampled (seeded) and say so.
    max_rows: int = Field(default=100_000, ge=100)
    #: Fewer current rows than this: exit 3, not enough rows to judge.
    min_rows: int = Field(default=30, ge=1)
    #: Fewer labelled rows than this: expected_calibration_error is null.
    min_labelled_rows: int = Field(default=50, ge=1)
    #: Evidently stat test for every column (None: Evidently's per-column default).
    method: str | None = None
    threshold: float | None = Field(default=None, gt=0)
    column_method: dict[str, str] = Field(default_factory=dict)
    column_threshold: dict[str, float] = Field(default_factory=dict)
    #: Share of drifted columns at which the dataset counts as drifted (Evidently's default).
    drift_share: float = Field(default=0.5, gt=0, le=1)
    seed: int = 0
    #: Models whose conformal sets are recalibrated on feedback labels (off for every other).
    adapt_conformal: list[str] = Field(default_factory=list)
    #: Labelled rows a recalibration takes (the newest), and the fewest it needs to publish.
    adapt_window_rows: int = Field(default=500, ge=20, le=100_000)
    adapt_min_rows: int = Field(default=100, ge=20, le=100_000)
    #: Bootstrap resamples of each per-group fairness interval, and the most rows of a group
    #: they resample (a seeded sample above that, whose interval is wider than the group's).
    fairness_resamples: int = Field(default=BOOTSTRAP_RESAMPLES, ge=100, le=10_000)
    fairness_bootstrap_rows: int = Field(default=20_000, ge=100)

    @field_validator("column_threshold")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if threshold <= 0:
                raise ValueError(f"threshold of column {name!r} must be positive")
        return value
