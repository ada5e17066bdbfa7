"""End-to-end training runs: bundles, determinism, versioning, failures, targets, reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

import training.pipeline as pipeline
from service.bundle import (
    CategoricalFeature,
    NumericFeature,
    graph_columns,
    model_versions,
    read_manifest,
)
from service.bundle.manifest import (
    REFERENCE_INTERVAL_WIDTH_COLUMN,
    REFERENCE_LABEL_COLUMN,
    REFERENCE_PREDICTION_COLUMN,
    REFERENCE_PROBABILITY_PREFIX,
    file_sha256,
)
from tests.training.helpers import CliOutcome, empty_repository, read_card, tiny_config
from training.export import ParityError, export_ensemble
from training.onnx_graph import EnsembleWeights
from training.pipeline import TrainResult, train

pytestmark = pytest.mark.slow


def test_same_seed_gives_the_same_bytes_and_a_second_train_is_version_2(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    first = train(tiny_config("breast_cancer", repo, seed=3))
    second = train(tiny_config("breast_cancer", repo, seed=3))
    assert first.bundle_path == repo / "breast_cancer" / "1"
    assert second.bundle_path == repo / "breast_cancer" / "2"
    assert model_versions(repo, "breast_cancer") == [1, 2]
    a, b = (p / "model.onnx" for p in (first.bundle_path, second.bundle_path))
    assert a.read_bytes() == b.read_bytes()
    assert read_manifest(first.bundle_path).model_sha256 == file_sha256(b)
    other = train(tiny_config("breast_cancer", tmp_path / "other", seed=4))
    assert (other.bundle_path / "model.onnx").read_bytes() != a.read_bytes()
    assert not [p for p in (repo / "breast_cancer").iterdir() if p.name.startswith(".")]


def test_parity_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real fault: the exported graph carries weights that differ from the trained ones.
    def corrupted_export(features: list[object], weights: EnsembleWeights) -> onnx.ModelProto:
        bad = [(w * 1.01, b) for w, b in weights.layers]
        return export_ensemble(features, EnsembleWeights(bad, weights.temperatures))  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "export_ensemble", corrupted_export)
    repo = tmp_path / "models"
    with pytest.raises(ParityError, match="nothing was written"):
        train(tiny_config("breast_cancer", repo))
    assert empty_repository(repo)


def test_breast_cancer_meets_its_targets(breast_cancer_bundle: TrainResult) -> None:
    m = breast_cancer_bundle.metrics
    assert m["accuracy"] >= 0.95
    assert m["ece"] <= 0.05
    assert m["roc_auc_macro"] >= 0.97


def test_digits_meets_its_target(digits_bundle: TrainResult) -> None:
    m = digits_bundle.metrics
    assert m["accuracy"] >= 0.95
    manifest = read_manifest(digits_bundle.bundle_path)
    assert manifest.classes == [str(d) for d in range(10)]
    # Conformal sets do their job on real held-out data (loose: ~270 test rows).
    assert m["conformal_coverage_90"] >= 0.85


def test_synthetic_intervals_cover_the_true_probability(synthetic_bundle: TrainResult) -> None:
    m = synthetic_bundle.metrics
    # Loose bounds for 4000 rows: broken intervals (zero width, or centred on the wrong value)
    # cover almost nothing; intervals as wide as (0, 1) would break the width bound.
    assert m["true_proba_coverage_95"] >= 0.85
    assert m["true_proba_coverage_90"] <= m["true_proba_coverage_95"]
    assert 0.02 <= m["interval_width_95"] <= 0.45
    assert m["interval_width_90"] < m["interval_width_95"]
    assert m["conformal_coverage_90"] >= 0.85


def test_bundle_contents_match_the_contract(breast_cancer_bundle: TrainResult) -> None:
    path = breast_cancer_bundle.bundle_path
    manifest = read_manifest(path)
    assert manifest.members == 8 and len(manifest.calibration.temperatures) == 8
    assert manifest.classes == ["benign", "malignant"]
    assert manifest.model_sha256 == file_sha256(path / "model.onnx")
    assert manifest.metrics["accuracy"] == pytest.approx(breast_cancer_bundle.metrics["accuracy"])
    ref = pd.read_parquet(path / "reference.parquet")
    t = manifest.training
    assert len(ref) == t["rows_validation"] + t["rows_calibration"] + t["rows_test"]  # type: ignore[operator]
    for col in (
        REFERENCE_LABEL_COLUMN,
        REFERENCE_PREDICTION_COLUMN,
        REFERENCE_INTERVAL_WIDTH_COLUMN,
        *(f"{REFERENCE_PROBABILITY_PREFIX}{c}" for c in manifest.classes),
        *manifest.feature_names,
    ):
        assert col in ref.columns
    probs = ref[[f"{REFERENCE_PROBABILITY_PREFIX}{c}" for c in manifest.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The stored sample reproduces through the stored graph (what the service checks on load).
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, graph_columns(manifest.features, manifest.sample.inputs))[0]
    np.testing.assert_allclose(out, manifest.sample.outputs, atol=1e-5)


def test_model_card_and_figures(synthetic_bundle: TrainResult) -> None:
    report = synthetic_bundle.bundle_path / "report"
    for png in ("reliability.png", "loss_curves.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (report / png).stat().st_size > 5000
    card = read_card(synthetic_bundle)
    m = synthetic_bundle.metrics
    for key in (
        "accuracy",
        "roc_auc_macro",
        "log_loss",
        "brier",
        "ece",
        "conformal_coverage_90",
        "conformal_set_size_90",
        "conformal_coverage_95",
        "conformal_set_size_95",
        "true_proba_coverage_90",
        "true_proba_coverage_95",
        "interval_width_95",
    ):
        assert f"| {m[key]:.4f} |" in card, key
    assert "EVERY class" in card and "15 bins" in card


def test_csv_with_missing_values_and_categories_end_to_end(
    mixed_csv: Path, tmp_path: Path, probserve: Callable[..., CliOutcome]
) -> None:
    repo = tmp_path / "models"
    out = probserve(
        "train", "--data", str(mixed_csv), "--target", "outcome", "--model-repository", str(repo),
        "--members", "3", "--epochs", "15", "--hidden", "16", "--progress",
    )  # fmt: skip
    assert out.code == 0, out.err
    bundle = repo / "mixed-data" / "1"
    assert f"bundle: {bundle}" in out.out and "accuracy=" in out.out
    assert "training 3 members" in out.err and "val_loss=" in out.err  # the progress bar
    manifest = read_manifest(bundle)
    kinds = {f.name: f for f in manifest.features}
    assert isinstance(kinds["x1"], NumericFeature)
    colour = kinds["colour"]
    assert isinstance(colour, CategoricalFeature) and colour.categories == ["blue", "green", "red"]
    assert isinstance(kinds["flag"], CategoricalFeature)
    assert manifest.classes == ["no", "yes"] and manifest.target == "outcome"
    # Missing numerics, missing and unseen categories give valid probabilities.
    rows: dict[str, list[str | float | None]] = {n: [None, None] for n in manifest.feature_names}
    rows["colour"] = ["purple", None]
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(None, graph_columns(manifest.features, rows))[0]
    assert probs.shape == (2, 3, 2) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    assert json.loads((bundle / "manifest.json").read_text())["training"]["members"] == 3
