"""Conformal sets against feedback labels: realized coverage, and a recalibration to publish.

Split-conformal sets cover at their level only while traffic is exchangeable with the calibration
split. From the labelled rows of a window this reports how the sets served from the bundle's
scores and from the adapted scores in use actually covered, and (when adaptation is on for the
model) recalibrates on the newest labelled rows: their LAC scores, sorted, published beside the
bundle for every server to pick up (service.bundle.adapted_conformal). The served threshold at
level L is then the ``ceil((n + 1) L)``-th smallest of them, the same split-conformal rule, now
over rows that look like today's traffic (docs/architecture.md, "Monitoring").
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from monitoring.drift.summary import ConformalFigures
from service.bundle import (
    AdaptedConformal,
    AdaptedConformalError,
    Manifest,
    read_adapted_conformal,
    write_adapted_conformal,
)
from service.bundle.manifest import REFERENCE_PROBABILITY_PREFIX
from service.fairness import conformal_coverage, mean_set_size
from service.predlog.reader import TRUE_LABEL
from service.uncertainty import conformal_scores, conformal_threshold, prediction_sets

logger = logging.getLogger(__name__)


def labelled_rows(
    window: pd.DataFrame, manifest: Manifest, version: int
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
    """Probabilities [n, C], true class indices [n] and served levels [n] of the rows of
    ``version`` whose feedback label is a class of the model, oldest first."""
    classes = list(manifest.classes)
    index = {c: i for i, c in enumerate(classes)}
    if window.empty or TRUE_LABEL not in window:
        return np.empty((0, len(classes))), np.empty(0, dtype=np.int64), np.empty(0)
    rows = window[(window["version"] == version) & window[TRUE_LABEL].isin(classes)]
    rows = rows.sort_values("logged_at", kind="stable")
    columns = [f"{REFERENCE_PROBABILITY_PREFIX}{c}" for c in classes]
    probabilities = rows[columns].to_numpy(dtype=np.float64)
    truth = np.fromiter((index[t] for t in rows[TRUE_LABEL]), dtype=np.int64, count=len(rows))
    return probabilities, truth, rows["confidence_level"].to_numpy(dtype=np.float64)


def sets_at_levels(
    probabilities: NDArray[np.float64], levels: NDArray[np.float64], scores: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """The prediction sets [n, C] that ``scores`` give, each row at its own served level."""
    members = np.zeros(probabilities.shape, dtype=bool)
    for level in np.unique(levels):
        rows = levels == level
        threshold = conformal_threshold(scores, float(level))
        members[rows] = prediction_sets(probabilities[rows], threshold)
    return members


def set_figures(
    probabilities: NDArray[np.float64],
    truth: NDArray[np.int64],
    levels: NDArray[np.float64],
    scores: NDArray[np.float64],
) -> tuple[float | None, float | None]:
    """Realized coverage and mean size of the sets ``scores`` give, each row at its own level;
    (None, None) without rows."""
    n = len(truth)
    if n == 0:
        return None, None
    members = sets_at_levels(probabilities, levels, scores)
    coverage = conformal_coverage(truth, truth, prediction_sets=members)
    return coverage, mean_set_size(truth, truth, prediction_sets=members)


def recalibrated_scores(
    probabilities: NDArray[np.float64], truth: NDArray[np.int64], window_rows: int
) -> NDArray[np.float64]:
    """LAC scores of the newest ``window_rows`` labelled rows (rows are oldest first), sorted."""
    newest = slice(max(len(truth) - window_rows, 0), None)
    return conformal_scores(probabilities[newest], truth[newest])


def in_use(bundle_dir: Path, manifest: Manifest, version: int) -> AdaptedConformal | None:
    """The adapted scores the servers read now; None when there are none or they are unusable."""
    try:
        return read_adapted_conformal(bundle_dir, manifest.name, version)
    except AdaptedConformalError as exc:
        logger.warning("adapted conformal scores of %s ignored: %s", manifest.name, exc)
        return None


def conformal_figures(
    window: pd.DataFrame,
    manifest: Manifest,
    version: int,
    bundle_dir: Path,
    *,
    adapt: bool,
    window_rows: int,
    min_rows: int,
) -> ConformalFigures:
    """Realized coverage of the bundle's and the adapted sets over the window's labelled rows;
    with ``adapt``, publish a recalibration when at least ``min_rows`` rows are labelled."""
    probabilities, truth, levels = labelled_rows(window, manifest, version)
    static = np.asarray(manifest.calibration.conformal_scores, dtype=np.float64)
    static_coverage, static_size = set_figures(probabilities, truth, levels, static)
    current = in_use(bundle_dir, manifest, version)
    adapted_coverage = adapted_size = None
    if current is not None:
        scores = np.asarray(current.scores, dtype=np.float64)
        adapted_coverage, adapted_size = set_figures(probabilities, truth, levels, scores)
    published = None
    if adapt and len(truth) >= min_rows:
        fresh = recalibrated_scores(probabilities, truth, window_rows)
        published = AdaptedConformal(
            model=manifest.name,
            version=version,
            revision=1 if current is None else current.revision + 1,
            window_rows=len(fresh),
            created_at=time.time(),
            scores=fresh.tolist(),
        )
        write_adapted_conformal(bundle_dir, published)
    return ConformalFigures(
        labelled_rows=len(truth),
        static_coverage=static_coverage,
        static_mean_set_size=static_size,
        adapted_revision=None if current is None else current.revision,
        adapted_coverage=adapted_coverage,
        adapted_mean_set_size=adapted_size,
        published_revision=None if published is None else published.revision,
    )
