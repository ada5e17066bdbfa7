"""The trainer as one function: load -> split -> preprocess -> fit -> calibrate -> export ->
verify -> report -> write bundle. Each stage is a module of its own with plain data between them.

Nothing touches the model repository until the last stage, and that stage publishes through a
staging directory and an atomic rename, so a failure anywhere leaves the repository as it was.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from service.bundle.repository import check_not_a_file
from service.errors import UsageError
from service.uncertainty import reliability_bins
from training.bundle_writer import write_bundle
from training.calibrate import calibrate
from training.data import load_dataset, model_name_for
from training.ensemble import EnsembleConfig, fit_ensemble, member_logits, resolve_device
from training.export import (
    check_parity,
    ensemble_weights,
    export_ensemble,
    onnx_member_probabilities,
    random_rows,
)
from training.metrics import calibration_figures, evaluate
from training.preprocess import encode_features, fit_features, json_inputs
from training.report import (
    HELD_OUT_SPLITS,
    REFERENCE_LEVEL,
    HeldOutRows,
    ReportInputs,
    build_reference,
    report_writer,
)
from training.report_fairness import fairness_report
from training.report_importance import importance_inputs
from training.sensitive import check_columns, context_frame, model_dataset, sensitive_columns
from training.served_outputs import served_outputs
from training.splits import SplitSizes, stratified_splits

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Real test rows in the parity check (plus random rows) and rows stored as the load-time sample.
PARITY_REAL_ROWS = 256
SAMPLE_ROWS = 8


class TrainConfig(BaseModel):
    """Everything ``probserve train`` can be told; defaults are the tuned defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str
    target: str | None = None
    name: str | None = None
    model_repository: Path = Path("models")
    members: int = Field(default=8, ge=2)
    hidden: tuple[int, ...] = (128, 128)
    epochs: int = Field(default=200, ge=1)
    batch_size: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    patience: int = Field(default=20, ge=0)
    min_improvement: float = Field(default=1e-3, ge=0, le=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    validation_size: float = 0.15
    calibration_size: float = 0.10
    test_size: float = 0.15
    synthetic_rows: int = Field(default=20_000, ge=1)
    synthetic_output: Path | None = None
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    #: Columns to slice fairness figures by; excluded columns stay out of the model's inputs.
    sensitive: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    #: Test rows explained for the card's global feature importance (0: no such section).
    importance_rows: int = Field(default=64, ge=0)
    progress: bool | None = None

    def ensemble(self) -> EnsembleConfig:
        """The ensemble stage's settings."""
        return EnsembleConfig(
            members=self.members,
            hidden=self.hidden,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            patience=self.patience,
            min_improvement=self.min_improvement,
            seed=self.seed,
            device=self.device,
            progress=self.progress,
        )


@dataclass(frozen=True)
class TrainResult:
    """Where the bundle went and its test figures."""

    bundle_path: Path
    metrics: dict[str, float]
    parity_max_abs_diff: float


def model_name(config: TrainConfig) -> str:
    """The bundle's model name: ``--name`` or derived from the data source."""
    name = config.name if config.name is not None else model_name_for(config.data)
    if not _MODEL_NAME.match(name):
        raise UsageError(
            f"model name {name!r} is not allowed: use letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return name


def train(config: TrainConfig) -> TrainResult:
    """Train, verify and publish a bundle as the next version of the model; see module doc."""
    # Fail before any training on a repository path that cannot hold bundles.
    check_not_a_file(config.model_repository)
    name = model_name(config)
    device = resolve_device(config.device)
    dataset = load_dataset(
        config.data,
        target=config.target,
        numeric=config.numeric,
        categorical=config.categorical,
        synthetic_rows=config.synthetic_rows,
        seed=config.seed,
        synthetic_output=config.synthetic_output,
    )
    check_columns(dataset, config.sensitive, config.exclude)
    inputs = model_dataset(dataset, config.exclude)
    sizes = SplitSizes(config.validation_size, config.calibration_size, config.test_size)
    splits = stratified_splits(dataset.labels, sizes, config.seed)
    frame, y = dataset.frame, dataset.labels
    # Every column, excluded ones too (for slicing); ``part`` holds the model's inputs only.
    rows = {
        s: frame.iloc[getattr(splits, s)].reset_index(drop=True)
        for s in ("train", "validation", "calibration", "test")
    }
    part = {s: v[inputs.feature_names] for s, v in rows.items()}
    labels = {s: y[getattr(splits, s)] for s in part}
    log.info(
        "data %s: %d rows, %d features, classes %s; splits %s",
        config.data,
        len(frame),
        len(inputs.feature_names),
        dataset.classes,
        {s: len(v) for s, v in labels.items()},
    )
    sensitive = sensitive_columns(rows["train"], config.sensitive, config.exclude)

    features = fit_features(part["train"], inputs.numeric, inputs.categorical)
    encoded = {s: encode_features(part[s], features) for s in part}
    trained = fit_ensemble(
        encoded["train"],
        labels["train"],
        encoded["validation"],
        labels["validation"],
        len(dataset.classes),
        config.ensemble(),
    )

    logits = {
        s: member_logits(trained.layers, encoded[s]) for s in ("validation", "calibration", "test")
    }
    calib = calibrate(
        logits["validation"], labels["validation"], logits["calibration"], labels["calibration"]
    )
    weights = ensemble_weights(trained.layers, calib.temperatures)
    graph = export_ensemble(features, weights)
    parity = check_parity(
        graph, features, weights, part["test"].head(PARITY_REAL_ROWS), seed=config.seed
    )

    # Figures come from the exported graph itself: what the service will serve.
    test_probs = onnx_member_probabilities(graph, features, part["test"])
    true_p = None
    if dataset.true_probabilities is not None:
        true_p = dataset.true_probabilities[splits.test]
    metrics = evaluate(test_probs, labels["test"], calib.conformal_scores, true_p)
    metrics.update(calibration_figures(logits["test"], labels["test"], calib))
    # The reference's model outputs are those of rows no member fitted (docs/architecture.md);
    # it also carries the sensitive columns kept out of the model, for the drift job's slices.
    held_out = {s: part[s].join(context_frame(rows[s], sensitive)) for s in HELD_OUT_SPLITS}
    reference = build_reference(
        [
            HeldOutRows(
                split=s,
                frame=held_out[s],
                labels=labels[s],
                member_probabilities=(
                    test_probs
                    if s == "test"
                    else onnx_member_probabilities(graph, features, held_out[s])
                ),
            )
            for s in HELD_OUT_SPLITS
        ],
        dataset.classes,
        calib.conformal_scores,
        seed=config.seed,
    )
    sample = pd.concat(
        [
            part["test"].head(SAMPLE_ROWS // 2),
            random_rows(features, SAMPLE_ROWS - SAMPLE_ROWS // 2, config.seed + 1),
        ],
        ignore_index=True,
    )
    report = ReportInputs(
        source=config.data,
        split_rows={s: len(v) for s, v in labels.items()},
        history=trained.history,
        reliability=reliability_bins(test_probs.mean(axis=1), labels["test"]),
        parity_max_abs_diff=parity.max_abs_diff,
        parity_rows=parity.rows,
        synthetic=true_p is not None,
        device=str(device),
        fairness=fairness_report(
            sensitive,
            rows["test"],
            labels["test"],
            served_outputs(test_probs, calib.conformal_scores, REFERENCE_LEVEL),
            dataset.classes,
            level=REFERENCE_LEVEL,
            seed=config.seed,
        )
        if sensitive
        else None,
        importance=importance_inputs(
            part["test"],
            features,
            config.importance_rows,
            seed=config.seed,
            level=REFERENCE_LEVEL,
        ),
    )
    params: dict[str, str | int | float | bool | None] = {
        "data": config.data,
        "members": config.members,
        "hidden": ",".join(map(str, config.hidden)),
        "epochs": config.epochs,
        "epochs_run": len(trained.history.train),
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "optimizer": config.optimizer,
        "patience": config.patience,
        "min_improvement": config.min_improvement,
        "seed": config.seed,
        "device": str(device),
        "validation_size": config.validation_size,
        "calibration_size": config.calibration_size,
        "test_size": config.test_size,
        "sensitive": ",".join(config.sensitive) or None,
        "exclude": ",".join(config.exclude) or None,
        "importance_rows": config.importance_rows,
        "train_seconds": round(trained.history.seconds, 3),
        "parity_max_abs_diff": parity.max_abs_diff,
        **{f"rows_{s}": len(v) for s, v in labels.items()},
    }
    path = write_bundle(
        config.model_repository,
        name,
        features=features,
        classes=dataset.classes,
        target=dataset.target,
        weights=weights,
        conformal_scores=calib.conformal_scores,
        metrics=metrics,
        training_params=params,
        data_fingerprint=dataset.fingerprint(),
        reference=reference,
        sample_inputs=json_inputs(sample, features),
        sensitive=sensitive,
        write_report=report_writer(report),
    )
    log.info("bundle written to %s", path)
    return TrainResult(path, metrics, parity.max_abs_diff)


def headline(metrics: dict[str, float]) -> str:
    """One line of the figures a person looks at first."""
    keys = (
        "accuracy",
        "roc_auc_macro",
        "ece",
        "log_loss",
        "conformal_coverage_90",
        "true_proba_coverage_95",
        "interval_width_95",
    )
    return "  ".join(
        f"{k}={metrics[k]:.4f}" for k in keys if k in metrics and np.isfinite(metrics[k])
    )
