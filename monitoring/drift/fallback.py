"""Our own drift score for a column Evidently cannot judge (no NaN ever reaches summary.json).

Evidently refuses a column that is empty on one side and can return a NaN score (a constant
column under some tests). Such a column is judged by the total variation distance between the
two sides' value distributions, missing values counted as a value of their own:
- categorical: the compared categories (manifest categories, unseen, missing);
- numeric: the bins between the reference's deciles, each decile itself a bin (so a constant
  reference still splits the current into below / equal / above).
The score is in [0, 1]; the column drifts when it exceeds ``FALLBACK_THRESHOLD``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FALLBACK_METHOD = "total_variation_fallback"
FALLBACK_THRESHOLD = 0.1


def _codes(values: pd.Series, edges: np.ndarray | None) -> np.ndarray:
    if edges is None:
        text: np.ndarray = (
            values.astype(object).where(values.notna(), "\x00missing").astype(str).to_numpy()
        )
        return text
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    missing = ~np.isfinite(x)
    safe = np.where(missing, 0.0, x)
    # left + right insertion points: 2i+1 for a value equal to edge i, 2i between edges.
    code = np.searchsorted(edges, safe, "left") + np.searchsorted(edges, safe, "right")
    return np.where(missing, -1, code).astype(str)


def total_variation(reference: pd.Series, current: pd.Series, *, numeric: bool) -> float:
    """Half the L1 distance between the two value distributions (1 when disjoint)."""
    if len(reference) == 0 or len(current) == 0:
        return 1.0
    edges = None
    if numeric:
        ref = pd.to_numeric(reference, errors="coerce").to_numpy(dtype=np.float64)
        ref = ref[np.isfinite(ref)]
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11))) if len(ref) else np.zeros(0)
    ref_share = pd.Series(_codes(reference, edges)).value_counts(normalize=True)
    cur_share = pd.Series(_codes(current, edges)).value_counts(normalize=True)
    both = ref_share.index.union(cur_share.index)
    diff = ref_share.reindex(both, fill_value=0.0) - cur_share.reindex(both, fill_value=0.0)
    return float(0.5 * np.abs(diff.to_numpy()).sum())


def needs_fallback(reference: pd.Series, current: pd.Series) -> bool:
    """True when one side has no value at all (Evidently raises on an empty column)."""
    return bool(reference.notna().sum() == 0 or current.notna().sum() == 0)
