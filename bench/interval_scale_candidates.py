"""Label-free scales for the ensemble's intervals, measured against the synthetic truth.

``python bench/interval_scale_candidates.py CACHE_DIR DATA:ROWS:SEED ...`` trains, for each cell,
the trainer's default ensemble (8 members, shared temperature) plus the extra members the
candidates need, caches every member's logits on the validation, calibration and test rows in
``CACHE_DIR`` (a cell already there is not retrained), and prints one table row per cell and level:
coverage of the true P(y = c | x) per class interval (share of (row, class) pairs) and mean width
on the test split, unscaled and for each candidate, then the means over seeds. ``SEED`` seeds both
the data draw and the ensemble. The scales are fitted on the validation and calibration rows only;
the oracle c (the 0.95 quantile of |centre - logit p*| / spread over t(K-1) on the test rows) is
the scale that would have been right, for comparison.

Candidates (bench/results/interval-scale.md, "Label-free candidates"):

- ``member-T``: each member's own temperature T_k (schema 1's fit, on the validation rows); the
  spread is the sd of the members' logits of ``softmax(z_k / T_k)``, the centre stays the mean of
  the shared-temperature logits. For a binary task the member logit is ``(z_k1 - z_k0) / T``, so
  with equal T_k this is the uniform shrink T / T_k. ``member-T pooled``: one scale instead, the
  root of mean(own-T spread^2) / mean(shared-T spread^2) over the held-out rows.
- ``half-sample``: four extra members on two disjoint halves of the training rows (two each; each
  bootstraps its half) and four that reuse members 0-3's bootstrap resamples with new
  initialisations. On the held-out rows, ``D = mean_half - mean_full`` (logits). Assuming the
  mean's bias is proportional to 1/n, ``bias(n/2) = 2 bias(n)`` and ``E[D] = bias(n)``, so
  ``B^2 = mean(D^2) - Var_half / 4 - Var_full / K`` (the noise the two means carry, from their
  spreads); the mean's variance is ``V_var = V_total - V_init (1 - 1/K)`` (the paired-members
  correction, V_init half the squared difference of a pair); the scale is
  ``sqrt((V_var + B^2) / V_total)``, every quantity pooled over held-out rows and classes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from service.uncertainty import ensemble_mean, student_t_quantile
from training import ensemble
from training.calibrate import (
    fit_mean_temperature,
    fit_member_temperatures,
    member_probabilities,
)
from training.data import load_dataset
from training.ensemble import fit_ensemble, member_logits
from training.pipeline import TrainConfig
from training.preprocess import encode_features, fit_features
from training.splits import SplitSizes, stratified_splits

SPLITS = ("validation", "calibration", "test")
#: Member numbers of the extras: 8-11 reuse 0-3's resamples; 20-21 and 22-23 fit the two halves.
PAIRS = (8, 9, 10, 11)
HALVES = ((20, 21), (22, 23))


def _paired_bootstrap(base_seed: int) -> None:
    """Members 8+j resample exactly as member j does (their initialisations differ)."""
    original = ensemble._bootstrap

    def paired(rows: int, seed: int) -> torch.Tensor:
        member = seed - base_seed * 10_007
        if member in PAIRS:
            member -= PAIRS[0]
        return original(rows, base_seed * 10_007 + member)

    ensemble._bootstrap = paired


def train_cell(path: Path, data_name: str, rows: int, seed: int) -> None:
    """Train the base ensemble and the extras for one cell; save their logits to ``path``."""
    torch.set_num_threads(1)
    config = TrainConfig(data=data_name, synthetic_rows=rows, seed=seed, progress=False)
    data = load_dataset(data_name, synthetic_rows=rows, seed=seed)
    sizes = SplitSizes(config.validation_size, config.calibration_size, config.test_size)
    splits = stratified_splits(data.labels, sizes, config.seed)
    names = ("train", *SPLITS)
    part = {s: data.frame.iloc[getattr(splits, s)].reset_index(drop=True) for s in names}
    labels = {s: data.labels[getattr(splits, s)] for s in names}
    features = fit_features(part["train"], data.numeric, data.categorical)
    x = {s: encode_features(part[s], features) for s in names}
    classes = len(data.classes)
    settings = config.ensemble()
    started = time.perf_counter()
    base = fit_ensemble(
        x["train"], labels["train"], x["validation"], labels["validation"], classes, settings
    )
    _paired_bootstrap(seed)
    pairs = fit_ensemble(
        x["train"],
        labels["train"],
        x["validation"],
        labels["validation"],
        classes,
        settings,
        members=PAIRS,
    )
    order = np.random.default_rng(seed + 1000).permutation(len(labels["train"]))
    halves = []
    for ids, rows_half in zip(HALVES, np.array_split(order, 2), strict=True):
        halves.append(
            fit_ensemble(
                x["train"][rows_half],
                labels["train"][rows_half],
                x["validation"],
                labels["validation"],
                classes,
                settings,
                members=ids,
            )
        )
    out: dict[str, NDArray[np.generic]] = {}
    for s in SPLITS:
        out[f"base_{s}"] = member_logits(base.layers, x[s])
        out[f"pairs_{s}"] = member_logits(pairs.layers, x[s])
        out[f"half_{s}"] = np.concatenate([member_logits(h.layers, x[s]) for h in halves], axis=1)
        out[f"labels_{s}"] = labels[s]
        assert data.true_probabilities is not None
        out[f"truth_{s}"] = data.true_probabilities[getattr(splits, s)]
    np.savez_compressed(path, **out)  # type: ignore[arg-type]
    print(f"trained {path.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def class_logits(
    z: NDArray[np.floating], temperatures: NDArray[np.floating]
) -> NDArray[np.float64]:
    """Per-class logits log(p / (1 - p)) [N, K, C] of ``softmax(z_k / T_k)``, clipped as served."""
    p = np.clip(member_probabilities(z, temperatures), 1e-7, 1 - 1e-7)
    out: NDArray[np.float64] = np.log(p) - np.log1p(-p)
    return out


def coverage(
    centre: NDArray[np.float64],
    spread: NDArray[np.float64],
    mean: NDArray[np.float64],
    truth: NDArray[np.float64],
    level: float,
    members: int,
) -> tuple[float, float]:
    """Share of (row, class) intervals holding the true probability; their mean width."""
    half = student_t_quantile(level, members) * spread
    lower = np.minimum(1 / (1 + np.exp(-(centre - half))), mean)
    upper = np.maximum(1 / (1 + np.exp(-(centre + half))), mean)
    held = (truth >= lower) & (truth <= upper)
    return float(held.mean()), float((upper - lower).mean())


def half_sample_scale(
    full: NDArray[np.float64], pairs: NDArray[np.float64], half: NDArray[np.float64]
) -> tuple[float, float, float, float]:
    """(scale, B^2, V_var, V_total) of the half-sample candidate from held-out class logits."""
    k = full.shape[1]
    v_total = float(full.var(axis=1, ddof=1).mean())
    init = float((((full[:, : pairs.shape[1]] - pairs) ** 2) / 2).mean())
    v_var = max(v_total - init * (1 - 1 / k), 0.0)
    d = half.mean(axis=1) - full.mean(axis=1)
    noise = half.var(axis=1, ddof=1).mean() / half.shape[1] + v_total / k
    b2 = max(float((d**2).mean() - noise), 0.0)
    return float(np.sqrt((v_var + b2) / v_total)), b2, v_var, v_total


Cells = dict[float, list[tuple[float, float]]]


def evaluate(path: Path, label: str) -> tuple[list[str], Cells]:
    """Table rows (one per level) for one cached cell, and its (coverage, width) per level."""
    c = np.load(path)
    held = {
        k: np.concatenate([c[f"{k}_validation"], c[f"{k}_calibration"]])
        for k in ("base", "pairs", "half")
    }
    shared = fit_mean_temperature(c["base_validation"], c["labels_validation"])
    k = c["base_test"].shape[1]
    shared_t = np.full(k, shared)
    own_t = fit_member_temperatures(c["base_validation"], c["labels_validation"])
    half_t = np.full(
        held["half"].shape[1], fit_mean_temperature(c["half_validation"], c["labels_validation"])
    )
    test = class_logits(c["base_test"], shared_t)
    centre, spread = test.mean(axis=1), test.std(axis=1, ddof=1)
    mean = ensemble_mean(member_probabilities(c["base_test"], shared_t))
    own_spread = class_logits(c["base_test"], own_t).std(axis=1, ddof=1)
    held_shared = class_logits(held["base"], shared_t).std(axis=1, ddof=1)
    held_own = class_logits(held["base"], own_t).std(axis=1, ddof=1)
    pooled = float(np.sqrt((held_own**2).mean() / (held_shared**2).mean()))
    scale, b2, v_var, v_total = half_sample_scale(
        class_logits(held["base"], shared_t),
        class_logits(held["pairs"], np.full(len(PAIRS), shared)),
        class_logits(held["half"], half_t),
    )
    truth = c["truth_test"]
    true_logit = np.log(np.clip(truth, 1e-7, 1)) - np.log1p(-np.clip(truth, 0, 1 - 1e-7))
    # The scale that would have been right: 0.95 quantile of |error| / spread over t(K-1).
    oracle = float(
        np.quantile(np.abs(centre - true_logit) / spread, 0.95) / student_t_quantile(0.95, k)
    )
    ratio = np.quantile(own_spread / np.maximum(spread, 1e-12), (0.1, 0.5, 0.9))
    info = (
        f"T {shared:.3f}, T_k {own_t.min():.3f}-{own_t.max():.3f}, member-T spread ratio "
        f"median {ratio[1]:.3f} (10-90% {ratio[0]:.3f}-{ratio[2]:.3f}), half-sample B^2 "
        f"{b2:.4f} V_var {v_var:.4f} V_total {v_total:.4f}"
    )
    print(f"{label}: {info}", file=sys.stderr)
    out, figures = [], {}
    for level in (0.95, 0.90):
        figures[level] = cells = [
            coverage(centre, spread, mean, truth, level, k),
            coverage(centre, own_spread, mean, truth, level, k),
            coverage(centre, pooled * spread, mean, truth, level, k),
            coverage(centre, scale * spread, mean, truth, level, k),
        ]
        out.append(
            f"| {label} | {level:.2f} | {oracle:.3f} | {pooled:.3f} | {scale:.3f} | "
            + " | ".join(f"{cov:.3f} / {width:.3f}" for cov, width in cells)
            + " |"
        )
    return out, figures


if __name__ == "__main__":
    cache = Path(sys.argv[1])
    cache.mkdir(parents=True, exist_ok=True)
    print(
        "| data / rows / seed | level | oracle c (0.95) | member-T pooled scale "
        "| half-sample scale | unscaled | member-T | member-T pooled | half-sample |"
    )
    print("|---" * 9 + "|")
    groups: dict[str, list[Cells]] = {}
    for cell in sys.argv[2:]:
        name, rows, seed = cell.split(":")
        path = cache / f"{name}-{rows}-{seed}.npz"
        if not path.exists():
            train_cell(path, name, int(rows), int(seed))
        lines, figures = evaluate(path, f"{name} / {rows} / {seed}")
        groups.setdefault(f"{name} / {rows}", []).append(figures)
        for line in lines:
            print(line, flush=True)
    print(
        "\n| data / rows (mean over seeds) | seeds | level | unscaled | member-T | member-T pooled "
        "| half-sample |"
    )
    print("|---" * 7 + "|")
    # The first four seeds are the judged mean; more seeds, when given, are a second row.
    for group, runs in groups.items():
        for level in (0.95, 0.90):
            for count in sorted({min(4, len(runs)), len(runs)}):
                means = np.array([run[level] for run in runs[:count]]).mean(axis=0)
                print(
                    f"| {group} | {count} | {level:.2f} | "
                    + " | ".join(f"{cov:.3f} / {width:.3f}" for cov, width in means)
                    + " |"
                )
