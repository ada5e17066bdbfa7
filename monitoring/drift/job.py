"""One drift run end to end: read, compute, write, push. The CLI and the monitor both call it."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from monitoring.drift.columns import ColumnMismatch
from monitoring.drift.computing import compute_drift
from monitoring.drift.conformal import conformal_figures
from monitoring.drift.metrics import DriftMetrics, push
from monitoring.drift.reading import read_baseline, read_current
from monitoring.drift.settings import DriftSettings
from monitoring.drift.summary import DriftSummary
from monitoring.drift.writing import add_to_workspace, default_output, write_report, write_summary
from service.bundle import bundle_path
from service.errors import UsageError


class PushFailed(Exception):
    """The outputs are written but the Pushgateway did not take the metrics."""


@dataclass(frozen=True)
class JobOutcome:
    """What one run produced."""

    summary: DriftSummary
    output: Path
    reference_accuracy: float | None
    finished_at: float


def run_job(settings: DriftSettings, model: str, version: int | None = None) -> JobOutcome:
    """Run the drift job once for ``model``; see :func:`compute_drift` for the errors."""
    baseline = read_baseline(settings.model_repository, model, version)
    current = read_current(
        settings.prediction_log_url,
        baseline.manifest,
        version=version,
        since_seconds=settings.since_seconds,
        last=settings.last,
    )
    try:
        result = compute_drift(
            baseline.manifest,
            baseline.version,
            baseline.reference,
            current,
            settings,
            notes=baseline.warnings,
        )
    except ColumnMismatch as exc:
        raise UsageError(str(exc)) from exc
    figures = conformal_figures(
        current,
        baseline.manifest,
        baseline.version,
        bundle_path(settings.model_repository, model, baseline.version),
        adapt=model in settings.adapt_conformal,
        window_rows=settings.adapt_window_rows,
        min_rows=settings.adapt_min_rows,
    )
    result = replace(result, summary=result.summary.model_copy(update={"conformal": figures}))
    output = settings.output or default_output(model)
    write_summary(result, output)
    write_report(result, output)
    if settings.workspace is not None:
        add_to_workspace(result, settings.workspace)
    accuracy = baseline.manifest.metrics.get("accuracy")
    outcome = JobOutcome(result.summary, output, accuracy, time.time())
    if settings.pushgateway:
        metrics = DriftMetrics()
        metrics.record(
            outcome.summary, reference_accuracy=accuracy, finished_at=outcome.finished_at
        )
        try:
            push(metrics, settings.pushgateway, model)
        except OSError as exc:
            raise PushFailed(f"cannot push the drift metrics to the Pushgateway: {exc}") from exc
    return outcome
