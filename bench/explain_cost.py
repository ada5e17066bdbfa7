"""Explanation cost: ms per instance on one core, and what an explain flood does to predictions.

Trains two bundles with the default architecture (8 members, two hidden layers of 128) into a
temporary repository: breast_cancer's first 10 features (exact enumeration: 1,022 coalitions,
each expanded over the background rows) and all 30 (the demo model: antithetic permutation
sampling). The process is pinned to one core and ONNX Runtime runs one intra-op thread, as the
service runs it. Run: ``.venv/bin/python -m bench.explain_cost`` (about three minutes, mostly
training). Results: bench/results/explain-cost.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from service.explain import (
    Background,
    Explainer,
    ExplainerBusy,
    ExplainerSettings,
    choose_plan,
    explain_rows,
    load_background,
)
from service.runtime import LoadedModel, load_model
from service.types import FeatureBatch
from training.pipeline import TrainConfig, train

#: The targets, ms per instance at a background of 50-100 rows.
TARGETS_MS = {10: 100.0, 30: 250.0}
BACKGROUND_SIZES = (25, 50, 100)
INSTANCES = 16


def train_models(repository: Path) -> dict[int, LoadedModel]:
    """Bundles of breast_cancer with 10 and with 30 features, keyed by feature count."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns=["target"]).iloc[:, :10]
    frame["diagnosis"] = np.array(data.target_names)[data.target]
    repository.mkdir(parents=True, exist_ok=True)
    csv = repository.parent / "breast_cancer_10.csv"
    frame.to_csv(csv, index=False)
    common = {"model_repository": repository, "progress": False, "device": "cpu"}
    ten = train(TrainConfig(data=str(csv), target="diagnosis", name="bc10", **common))
    thirty = train(TrainConfig(data="breast_cancer", **common))
    return {10: load_model(ten.bundle_path), 30: load_model(thirty.bundle_path)}


def per_instance_ms(model: LoadedModel, background: Background) -> float:
    """Median ms per instance, explaining INSTANCES background rows one request each."""
    names = model.manifest.feature_names
    plan = choose_plan(len(names), background.rows)
    times = []
    for i in range(INSTANCES):
        row = {n: background.columns[n][i : i + 1] for n in names}
        started = time.perf_counter()
        explain_rows(
            model.run, names, model.manifest.classes, row, background, level=0.95, plan=plan
        )
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def prediction_latency_us(model: LoadedModel, flood: bool, seconds: float = 3.0) -> list[float]:
    """1-row prediction latencies (model.run) with or without an explain flood beside them.

    The flood keeps an Explainer's queue full from another thread; everything shares the one
    pinned core, the worst case for the prediction path.
    """
    explainer = Explainer.for_model(model, ExplainerSettings(queue_size=4))
    names = model.manifest.feature_names
    row = {n: explainer.background.columns[n][:1] for n in names}
    batch = FeatureBatch(columns=row, rows=1)
    stop = threading.Event()

    def keep_queue_full() -> None:
        while not stop.is_set():
            try:
                explainer.submit(batch, 0.95)
            except ExplainerBusy:
                time.sleep(0.01)

    feeder = threading.Thread(target=keep_queue_full, daemon=True)
    if flood:
        feeder.start()
        time.sleep(0.2)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        model.run(row)
        latencies.append((time.perf_counter() - started) * 1e6)
        time.sleep(0.001)
    stop.set()
    if flood:
        feeder.join()
    explainer.close()
    return latencies


def main() -> None:
    """Print the figures (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--core", type=int, default=0, help="the CPU core to pin to")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    with tempfile.TemporaryDirectory() as tmp:
        models = train_models(Path(tmp) / "models")
        print(f"pinned to core {args.core}; median of {INSTANCES} instances; 8 members, 128x128")
        for features, model in models.items():
            for size in BACKGROUND_SIZES:
                background = load_background(model.path, model.manifest, model.run, size=size)
                method = choose_plan(features, size).method
                ms = per_instance_ms(model, background)
                verdict = "met" if ms <= TARGETS_MS[features] else "missed"
                print(
                    f"{features} features, {method}, background {size}: {ms:.1f} ms/instance "
                    f"(target {TARGETS_MS[features]:.0f} ms: {verdict})"
                )
        for flood in (False, True):
            us = prediction_latency_us(models[30], flood)
            p50, p99 = np.percentile(us, [50, 99])
            label = "during an explain flood on the same core" if flood else "alone"
            print(f"1-row prediction {label}: p50 {p50:.0f} us, p99 {p99:.0f} us")


if __name__ == "__main__":
    main()
