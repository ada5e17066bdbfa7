"""The background sample: reference rows the missing features of a coalition are drawn from.

Interventional Shapley values compare an instance with rows of the training distribution; the
bundle's ``reference.parquet`` holds such a sample, so a fixed-seed draw from it is the
background (docs/architecture.md, "Explanations").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq
from numpy.typing import NDArray

from service.bundle import REFERENCE_FILE, Manifest, graph_columns
from service.explain.defaults import DEFAULT_BACKGROUND_ROWS
from service.explain.errors import BackgroundError
from service.explain.valuation import ModelFunction
from service.uncertainty import ensemble_mean

if TYPE_CHECKING:  # the engine is numpy only: ONNX Runtime is the caller's business
    from service.runtime.model import Columns


@dataclass(frozen=True)
class Background:
    """Background rows as graph input columns and the model's member outputs on them."""

    columns: dict[str, NDArray[np.generic]]  # feature -> [B, 1], graph dtypes
    member_probabilities: NDArray[np.float32]  # [B, K, C]

    @property
    def rows(self) -> int:
        """Number of background rows (B)."""
        return int(self.member_probabilities.shape[0])

    @property
    def member_base_values(self) -> NDArray[np.float64]:
        """Each member's expected probability over the background, [K, C]."""
        mean: NDArray[np.float64] = np.mean(self.member_probabilities, axis=0, dtype=np.float64)
        return mean

    @property
    def base_values(self) -> NDArray[np.float64]:
        """Expected served probability over the background, [C]."""
        base: NDArray[np.float64] = ensemble_mean(self.member_base_values[None])[0]
        return base


def background_from_columns(columns: Columns, run: ModelFunction) -> Background:
    """A background of the given graph columns (feature -> [B, 1]); runs the model once on them."""
    rows = {len(v) for v in columns.values()}
    if len(rows) != 1 or 0 in rows:
        raise BackgroundError(
            f"background columns must all have the same number of rows, at least 1; got {rows}"
        )
    owned = {name: np.ascontiguousarray(values) for name, values in columns.items()}
    return Background(owned, np.asarray(run(owned), dtype=np.float32))


def load_background(
    bundle_dir: Path,
    manifest: Manifest,
    run: ModelFunction,
    *,
    size: int = DEFAULT_BACKGROUND_ROWS,
    seed: int = 0,
) -> Background:
    """``size`` rows drawn with ``seed`` (without replacement) from the bundle's reference rows."""
    if size < 1:
        raise BackgroundError(f"background size must be at least 1, got {size}")
    path = bundle_dir / REFERENCE_FILE
    names = manifest.feature_names
    try:
        table = pq.read_table(path, columns=names)
    except FileNotFoundError as exc:
        raise BackgroundError(
            f"model {manifest.name!r} has no {REFERENCE_FILE}: explanations need its reference "
            "rows as a background"
        ) from exc
    except (OSError, KeyError, ValueError) as exc:  # pyarrow: unreadable file or missing column
        raise BackgroundError(
            f"{REFERENCE_FILE} of model {manifest.name!r} cannot be read as a background "
            f"(expected the columns {names}): {exc}"
        ) from exc
    if table.num_rows == 0:
        raise BackgroundError(f"{REFERENCE_FILE} of model {manifest.name!r} holds no rows")
    rng = np.random.default_rng(seed)
    picked = rng.choice(table.num_rows, size=min(size, table.num_rows), replace=False)
    sample = table.take(np.sort(picked))
    values = {name: sample.column(name).to_pylist() for name in names}
    return background_from_columns(graph_columns(manifest.features, values), run)
