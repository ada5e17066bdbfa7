"""Stratified train / validation / calibration / test split.

Validation drives early stopping and the temperatures; calibration is held out for the
conformal scores only (their coverage guarantee needs rows no fitting step has seen); test is
for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.errors import UsageError

#: Fewest rows a non-training split may hold: below this its figures mean nothing.
MIN_SPLIT_ROWS = 5
SPLIT_NAMES = ("train", "validation", "calibration", "test")


@dataclass(frozen=True)
class SplitSizes:
    """Fractions of the rows per split; train takes what the other three leave."""

    validation: float = 0.15
    calibration: float = 0.10
    test: float = 0.15

    @property
    def train(self) -> float:
        """Share of rows left for training."""
        return 1.0 - self.validation - self.calibration - self.test

    def check(self) -> None:
        """Raise UsageError unless every fraction is in (0, 1) and train keeps at least 10%."""
        for name in ("validation", "calibration", "test"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise UsageError(f"--{name}-size must be between 0 and 1, got {value}")
        if self.train < 0.1:
            raise UsageError(
                f"split sizes leave {self.train:.2f} of the rows for training: make "
                "--validation-size + --calibration-size + --test-size at most 0.9"
            )


@dataclass(frozen=True)
class Splits:
    """Row indices of each split (disjoint, covering every row)."""

    train: NDArray[np.int64]
    validation: NDArray[np.int64]
    calibration: NDArray[np.int64]
    test: NDArray[np.int64]


def stratified_splits(labels: NDArray[np.int64], sizes: SplitSizes, seed: int) -> Splits:
    """Split rows so every split keeps the class proportions (to rounding), reproducibly.

    Each class is shuffled and cut at the cumulative fractions, so a class with few rows still
    lands in training first. Too few rows for a usable split raise UsageError.
    """
    sizes.check()
    rng = np.random.default_rng(seed)
    fractions = np.array([sizes.train, sizes.validation, sizes.calibration, sizes.test])
    cuts = np.cumsum(fractions)[:-1]
    parts: list[list[NDArray[np.int64]]] = [[], [], [], []]
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.round(cuts * len(rows)).astype(np.int64)
        for i, chunk in enumerate(np.split(rows, bounds)):
            parts[i].append(chunk.astype(np.int64))
    result = [np.sort(np.concatenate(p)) for p in parts]
    n = len(labels)
    for name, idx in zip(SPLIT_NAMES, result, strict=True):
        need = MIN_SPLIT_ROWS if name != "train" else 2 * MIN_SPLIT_ROWS
        if len(idx) < need:
            raise UsageError(
                f"too few rows for the splits: {n} rows leave {len(idx)} for {name} "
                f"(need at least {need}); supply more rows or change the split sizes"
            )
    if len(np.unique(labels[result[0]])) < 2:
        raise UsageError(
            "too few rows for the splits: the training split holds one class; supply more rows"
        )
    return Splits(*result)
