"""Helpers shared by the service tests: raw feature rows, a batch recorder, a corrupted bundle,
one native request row and Prometheus exposition parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.batching import BatchStats
from service.bundle import MODEL_FILE
from service.types import FeatureBatch

#: One valid native instance of the test bundle's features (tests/service/conftest.py).
ROW = {"x1": 0.3, "x2": 4.0, "colour": "red"}


def rows(n: int, seed: int) -> FeatureBatch:
    """``n`` random raw rows for the test features, missing values included."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n, 1)).astype(np.float32)
    x1[rng.random((n, 1)) < 0.2] = np.nan
    x2 = rng.normal(5, 2, size=(n, 1)).astype(np.float32)
    colour = rng.choice(["blue", "green", "red", "purple", ""], size=(n, 1)).astype(object)
    return FeatureBatch({"x1": x1, "x2": x2, "colour": colour}, n)


class Recorder:
    """A batch observer that keeps every BatchStats."""

    def __init__(self) -> None:
        self.stats: list[BatchStats] = []

    def __call__(self, stats: BatchStats) -> None:
        self.stats.append(stats)


def corrupt(bundle: Path) -> None:
    """Flip the last byte of model.onnx: the sha256 check must refuse the bundle."""
    data = bytearray((bundle / MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (bundle / MODEL_FILE).write_bytes(bytes(data))


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition text."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
