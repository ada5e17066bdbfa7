"""Compute one drift run from DataFrames: no database, no files (reading and writing are apart).

Evidently 0.7 judges each compared column with its per-column defaults unless ``--method`` /
``--threshold`` or a per-column override says otherwise. Its defaults: up to 1,000 reference
rows, K-S (numeric) and chi-square or Z-test (categorical) p-values, drift when p < 0.05; above
1,000 rows, Wasserstein distance normed by the reference std (numeric) and Jensen-Shannon
distance (categorical), drift when the distance >= 0.1. The dataset drifts when the share of
drifted columns reaches ``drift_share`` (0.5).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift.columns import (
    LOG_INTERVAL_WIDTH,
    LOG_LABEL,
    LOG_SET_SIZE,
    LOG_TRUE_LABEL,
    SET_SIZE,
    Compared,
    compared_frames,
    probability_columns,
)
from monitoring.drift.fairness import FairnessSettings, fairness_figures
from monitoring.drift.fallback import (
    FALLBACK_METHOD,
    FALLBACK_THRESHOLD,
    needs_fallback,
    total_variation,
)
from monitoring.drift.figures import (
    ambiguous_share,
    estimated_accuracy,
    feedback_figures,
    finite_mean,
)
from monitoring.drift.settings import DriftSettings
from monitoring.drift.summary import ColumnDrift, DriftSummary, Pair, Window
from service.bundle import Manifest
from service.bundle.manifest import REFERENCE_INTERVAL_WIDTH_COLUMN
from service.errors import UsageError

# Evidently ships telemetry: off wherever it runs (docs/architecture.md, toolchain notes).
os.environ.setdefault("DO_NOT_TRACK", "1")

from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.presets import DataDriftPreset

#: Interval level of the reference's interval widths (the service's default level).
REFERENCE_LEVEL = 0.95


class NotEnoughRows(Exception):
    """The window has fewer rows than ``--min-rows``: nothing to judge (exit code 3)."""


@dataclass(frozen=True)
class DriftResult:
    """The summary and Evidently's snapshot (None when no column could go to Evidently)."""

    summary: DriftSummary
    snapshot: Snapshot | None


def _cap(frame: pd.DataFrame, max_rows: int, seed: int) -> tuple[pd.DataFrame, bool]:
    if len(frame) <= max_rows:
        return frame, False
    return frame.sample(n=max_rows, random_state=seed).reset_index(drop=True), True


def _check_overrides(settings: DriftSettings, columns: list[str]) -> None:
    named = set(settings.column_method) | set(settings.column_threshold)
    unknown = sorted(named - set(columns))
    if unknown:
        raise UsageError(
            f"per-column override for unknown column(s) {', '.join(unknown)}; compared columns: "
            f"{', '.join(columns)}"
        )


def _run_evidently(
    compared: Compared,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    settings: DriftSettings,
) -> Snapshot:
    definition = DataDefinition(
        numerical_columns=[c for c in compared.numeric if c in columns],
        categorical_columns=[c for c in compared.categorical if c in columns],
    )
    preset = DataDriftPreset(
        columns=columns,
        drift_share=settings.drift_share,
        method=settings.method,
        threshold=settings.threshold,
        per_column_method={c: m for c, m in settings.column_method.items() if c in columns} or None,
        per_column_threshold={c: t for c, t in settings.column_threshold.items() if c in columns}
        or None,
    )
    try:
        with warnings.catch_warnings():
            # Constant columns make scipy warn about 0/0; the verdict handles NaN scores below.
            warnings.simplefilter("ignore", RuntimeWarning)
            return Report([preset], include_tests=True).run(
                Dataset.from_pandas(current[columns], data_definition=definition),
                Dataset.from_pandas(reference[columns], data_definition=definition),
            )
    except ValueError as exc:
        # Evidently says ValueError for an unknown method or one that does not fit the column.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"Evidently refused the drift settings: {first}") from exc


def column_verdicts(snapshot: dict[str, Any]) -> dict[str, ColumnDrift]:
    """Per-column verdicts from ``Snapshot.dict()``: ValueDrift metrics and their tests.

    Evidently decides drift through its tests (a failed ValueDrift test means drift), so the
    verdict is the test status, not our reading of the score's direction.
    """
    failed = {
        t["metric_config"]["metric_id"]
        for t in snapshot.get("tests", [])
        if str(getattr(t.get("status"), "value", t.get("status"))).upper() == "FAIL"
    }
    out: dict[str, ColumnDrift] = {}
    for metric in snapshot.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        score = float(metric["value"]) if metric.get("value") is not None else math.nan
        out[str(config["column"])] = ColumnDrift.model_construct(
            drift_detected=metric["id"] in failed,
            score=score,
            method=str(config.get("method")),
            threshold=float(config.get("threshold")),
        )
    return out


def dataset_drift(columns: dict[str, ColumnDrift], drift_share: float) -> tuple[float, bool]:
    """The share of drifted columns, and whether the dataset drifted: the share reaches
    ``drift_share`` (Evidently's rule: 2 of 4 columns at 0.5 is drift)."""
    share = sum(c.drift_detected for c in columns.values()) / len(columns)
    return share, share >= drift_share


def _fallback(reference: pd.Series, current: pd.Series, *, numeric: bool) -> ColumnDrift:
    score = total_variation(reference, current, numeric=numeric)
    return ColumnDrift(
        drift_detected=score > FALLBACK_THRESHOLD,
        score=score,
        method=FALLBACK_METHOD,
        threshold=FALLBACK_THRESHOLD,
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _window(current: pd.DataFrame) -> Window:
    if "logged_at" not in current.columns or current["logged_at"].notna().sum() == 0:
        return Window()
    stamps = pd.to_numeric(current["logged_at"], errors="coerce")
    return Window(**{"from": _iso(float(stamps.min())), "to": _iso(float(stamps.max()))})


def _versions(current: pd.DataFrame) -> list[str]:
    if "version" not in current.columns:
        return []
    values = current["version"].dropna().unique()
    return sorted({str(v) for v in values}, key=lambda v: (len(v), v))


def compute_drift(
    manifest: Manifest,
    reference_version: int,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: DriftSettings,
    notes: list[str] | None = None,
) -> DriftResult:
    """Compare ``current`` (a prediction-log window) with ``reference`` (reference.parquet).

    Raises :class:`NotEnoughRows` below ``settings.min_rows`` current rows,
    :class:`monitoring.drift.columns.ColumnMismatch` when the log lacks the bundle's columns and
    :class:`UsageError` for overrides or methods Evidently refuses.
    """
    if len(current) < settings.min_rows:
        raise NotEnoughRows(
            f"{len(current)} logged row(s) of {manifest.name} in the window, fewer than "
            f"--min-rows {settings.min_rows}: not enough to judge drift"
        )
    # Sample before mapping the columns: a 1M-row window costs its mapping only for the rows
    # that reach Evidently. The label-free and feedback figures below use every row.
    cur_rows, sampled_cur = _cap(current, settings.max_rows, settings.seed)
    ref_rows, sampled_ref = _cap(reference, settings.max_rows, settings.seed)
    compared = compared_frames(manifest, ref_rows, cur_rows)
    columns = compared.columns
    _check_overrides(settings, columns)
    cur, ref = compared.current, compared.reference

    to_evidently = [c for c in columns if not needs_fallback(ref[c], cur[c])]
    snapshot = _run_evidently(compared, ref, cur, to_evidently, settings) if to_evidently else None
    verdicts = column_verdicts(snapshot.dict()) if snapshot is not None else {}
    result: dict[str, ColumnDrift] = {}
    for column in columns:
        verdict = verdicts.get(column)
        if verdict is None or not math.isfinite(verdict.score):
            verdict = _fallback(ref[column], cur[column], numeric=column in compared.numeric)
        result[column] = ColumnDrift.model_validate(verdict.model_dump())
    share, drifted = dataset_drift(result, settings.drift_share)

    notes = list(notes or [])
    empty = [f for f in manifest.feature_names if not current[f].notna().any()]
    if empty:
        notes.append(f"feature(s) missing in every logged row: {', '.join(empty)}")
    if sampled_cur or sampled_ref:
        notes.append(
            f"sampled to --max-rows {settings.max_rows} (seed {settings.seed}) before comparing"
        )
    if "confidence_level" in current.columns:
        levels = pd.to_numeric(current["confidence_level"], errors="coerce")
        if bool((levels.dropna() - REFERENCE_LEVEL).abs().gt(1e-9).any()):
            notes.append(
                f"some rows were served at a confidence level other than {REFERENCE_LEVEL}: "
                "their interval widths and set sizes are not comparable with the reference"
            )
    has_size = SET_SIZE in reference.columns
    probabilities = (
        current[probability_columns(manifest)]
        .apply(pd.to_numeric, errors="coerce")
        .to_numpy(dtype=np.float64)
    )
    feedback = feedback_figures(
        current[LOG_LABEL] if LOG_LABEL in current.columns else pd.Series([None] * len(current)),
        current[LOG_TRUE_LABEL]
        if LOG_TRUE_LABEL in current.columns
        else pd.Series([None] * len(current)),
        probabilities,
        manifest.classes,
        settings.min_labelled_rows,
    )
    fairness, fairness_notes = fairness_figures(
        current,
        manifest,
        reference_version,
        FairnessSettings(
            settings.fairness_resamples, settings.fairness_bootstrap_rows, settings.seed
        ),
    )
    notes += fairness_notes
    summary = DriftSummary(
        model=manifest.name,
        reference_version=reference_version,
        versions=_versions(current),
        window=_window(current),
        rows_current=len(current),
        rows_reference=len(reference),
        sampled=sampled_cur or sampled_ref,
        dataset_drift=drifted,
        share_drifted=share,
        columns=result,
        estimated_accuracy=estimated_accuracy(np.nan_to_num(probabilities)),
        realized_accuracy=feedback.realized_accuracy,
        labelled_rows=feedback.labelled_rows,
        feedback_unmatched=current.attrs.get("feedback", {}).get("unmatched"),
        expected_calibration_error=feedback.expected_calibration_error,
        mean_interval_width=Pair(
            reference=finite_mean(reference[REFERENCE_INTERVAL_WIDTH_COLUMN]),
            current=finite_mean(current[LOG_INTERVAL_WIDTH]),
        ),
        ambiguous_share=Pair(
            reference=ambiguous_share(reference[SET_SIZE]) if has_size else None,
            current=ambiguous_share(current[LOG_SET_SIZE])
            if LOG_SET_SIZE in current.columns
            else None,
        ),
        warnings=notes,
        fairness=fairness,
    )
    return DriftResult(summary, snapshot)
