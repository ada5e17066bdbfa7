"""Each trainer stage on its own, with small data and no full training run."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from service.bundle import CategoricalFeature, NumericFeature
from service.errors import UsageError
from training.calibrate import fit_member_temperatures
from training.data import load_dataset, synthetic_frame
from training.ensemble import EnsembleConfig, fit_ensemble, fit_ensemble_sequential
from training.export import ParityError, check_parity, ensemble_weights, export_ensemble
from training.metrics import classification_metrics, expected_calibration_error
from training.preprocess import encode_features, fit_features
from training.splits import SplitSizes, stratified_splits


def test_csv_column_kinds_are_inferred_and_overridable(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "age": [30, 40, None, 50] * 10,
            "city": ["a", "b", None, "a"] * 10,
            "code": [1, 2, 3, 1] * 10,
            "ok": [True, False, True, True] * 10,
            "y": [0, 1, 1, 0] * 10,
        }
    ).to_csv(path, index=False)
    ds = load_dataset(str(path), target="y")
    assert ds.numeric == ["age", "code"]
    assert ds.categorical == ["city", "ok"]
    assert ds.classes == ["0", "1"]
    assert ds.frame["city"].tolist()[:4] == ["a", "b", None, "a"]
    assert np.isnan(ds.frame["age"].iloc[2])
    ds2 = load_dataset(str(path), target="y", categorical=["code", "age"])
    assert ds2.numeric == [] and {"code", "age"} <= set(ds2.categorical)
    assert ds2.frame["code"].iloc[0] == "1"
    # "age" was read as float because of its gap; its categories are written as in the file.
    assert ds2.frame["age"].tolist()[:4] == ["30", "40", None, "50"]


def test_parquet_files_load_like_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame(
        {"a": [1.5, None, 2.0] * 10, "c": ["u", "v", None] * 10, "y": [True, False, True] * 10}
    ).to_parquet(path)
    ds = load_dataset(str(path), target="y")
    assert (ds.numeric, ds.categorical, ds.classes) == (["a"], ["c"], ["False", "True"])
    assert ds.name == "t" and len(ds.labels) == 30


def test_integer_labels_read_as_float_stay_integers(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": range(12), "y": [1, 2, None, 10] * 3}).to_csv(path, index=False)
    ds = load_dataset(str(path), target="y")
    assert ds.classes == ["1", "2", "10"]  # natural order, no "1.0"
    assert len(ds.labels) == 9  # rows without a target are dropped


def test_synthetic_truth_is_written_next_to_the_data(tmp_path: Path) -> None:
    out = tmp_path / "syn" / "data.csv"
    ds = load_dataset("synthetic", synthetic_rows=300, seed=3, synthetic_output=out)
    written = pd.read_csv(out)
    truth = pd.read_csv(out.with_name("data.true_proba.csv"))
    assert len(written) == len(truth) == 300
    assert ds.true_probabilities is not None
    np.testing.assert_allclose(truth.to_numpy(), ds.true_probabilities)
    assert set(ds.categorical) == {"colour", "size"}
    # The labels are draws from the truth: frequencies agree with the mean true probability.
    assert abs(ds.labels.mean() - ds.true_probabilities[:, 1].mean()) < 0.08


def test_splits_are_stratified_disjoint_and_complete() -> None:
    labels = np.array([0] * 700 + [1] * 300)
    s = stratified_splits(labels, SplitSizes(), seed=1)
    parts = [s.train, s.validation, s.calibration, s.test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    assert [len(p) for p in parts] == [600, 150, 100, 150]
    for p in parts:
        assert abs(labels[p].mean() - 0.3) < 0.01
    again = stratified_splits(labels, SplitSizes(), seed=1)
    assert np.array_equal(again.test, s.test)


def test_split_sizes_leaving_no_training_rows_are_rejected() -> None:
    with pytest.raises(UsageError, match=r"at most 0\.9"):
        stratified_splits(np.zeros(100, dtype=np.int64), SplitSizes(0.4, 0.3, 0.3), seed=0)


def test_preprocessing_fits_on_train_and_encodes_like_the_graph() -> None:
    frame = pd.DataFrame({"n": [1.0, 3.0, np.nan, 5.0], "c": ["b", "a", None, "b"]})
    features = fit_features(frame, ["n"], ["c"])
    n, c = features
    assert isinstance(n, NumericFeature) and isinstance(c, CategoricalFeature)
    assert n.mean == pytest.approx(3.0) and n.std == pytest.approx(np.sqrt(8 / 3))
    assert c.categories == ["a", "b"]
    new = pd.DataFrame({"n": [np.nan, 3.0 + n.std], "c": ["zzz", "a"]})
    encoded = encode_features(new, features)
    np.testing.assert_allclose(encoded, [[0.0, 0, 0, 1], [1.0, 1, 0, 0]], atol=1e-6)


def _random_weights(
    inputs: int, classes: int, members: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    sizes = [inputs, 16, classes]
    return [
        (
            rng.normal(0, 0.5, size=(members, a, b)).astype(np.float32),
            rng.normal(0, 0.1, size=(members, b)).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]


def test_onnx_parity_holds_and_catches_a_corrupted_graph() -> None:
    ds = load_dataset("synthetic", synthetic_rows=200, seed=0)
    features = fit_features(ds.frame, ds.numeric, ds.categorical)
    width = encode_features(ds.frame.head(1), features).shape[1]
    layers = _random_weights(width, 2, 3, seed=0)
    weights = ensemble_weights(layers, np.array([1.0, 1.5, 0.7]))
    report = check_parity(export_ensemble(features, weights), features, weights, ds.frame)
    assert report.max_abs_diff <= 1e-5 and report.rows > len(ds.frame)

    corrupted = ensemble_weights(
        [((w + 0.01).astype(np.float32), b) for w, b in layers], weights.temperatures
    )
    with pytest.raises(ParityError, match="does not match PyTorch"):
        check_parity(export_ensemble(features, corrupted), features, weights, ds.frame)


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(20000, 2, 3))
    true_t = np.array([2.0, 0.5])
    p = softmax(logits / true_t[None, :, None], axis=2)[:, 0, :]
    labels = np.array([rng.choice(3, p=row) for row in p])
    # Member 0 was generated at T=2; member 1's logits are member 0's scaled by 4, so T=8.
    logits[:, 1, :] = logits[:, 0, :] * 4
    fitted = fit_member_temperatures(logits, labels)
    np.testing.assert_allclose(fitted, [2.0, 8.0], rtol=0.05)


def test_metrics_match_hand_computed_values() -> None:
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    y = np.array([0, 1, 1, 1])
    m = classification_metrics(p, y)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))
    assert m["brier"] == pytest.approx(np.mean([0.02, 0.72, 0.08, 0.18]))
    assert m["roc_auc_macro"] == pytest.approx(1.0)  # positives 0.4,0.8,0.7 > negative 0.1
    # bins (15): 0.9 -> bin 13 acc 1; 0.6 -> bin 8 acc 0; 0.8 -> bin 11 acc 1; 0.7 -> bin 10 acc 1
    expected = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.8) + abs(1 - 0.7)) / 4
    assert expected_calibration_error(p, y) == pytest.approx(expected)


def _tiny_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    frame, target, _ = synthetic_frame(600, seed=5)
    features = fit_features(frame, ["x1", "x2", "x3", "x4"], ["colour", "size"])
    x = encode_features(frame, features)
    y = (target == "yes").to_numpy().astype(np.int64)
    return x[:450], y[:450], x[450:], y[450:]


def test_vectorised_members_equal_the_same_members_trained_one_by_one() -> None:
    x, y, xv, yv = _tiny_problem()
    config = EnsembleConfig(
        members=3, hidden=(8,), epochs=4, batch_size=64, device="cpu", patience=2, progress=False
    )
    together = fit_ensemble(x, y, xv, yv, 2, config)
    apart = fit_ensemble_sequential(x, y, xv, yv, 2, config)
    for (w1, b1), (w2, b2) in zip(together.layers, apart.layers, strict=True):
        np.testing.assert_allclose(w1, w2, atol=1e-5)
        np.testing.assert_allclose(b1, b2, atol=1e-5)
    # Members differ from each other (own initialisation and bootstrap resample).
    w = together.layers[0][0]
    assert not np.allclose(w[0], w[1])


def test_each_member_keeps_its_best_epoch() -> None:
    x, y, xv, yv = _tiny_problem()
    config = EnsembleConfig(
        members=2,
        hidden=(8,),
        epochs=30,
        batch_size=64,
        device="cpu",
        patience=3,
        learning_rate=0.05,
        min_improvement=0.0,
        progress=False,
    )
    trained = fit_ensemble(x, y, xv, yv, 2, config)
    val = np.array(trained.history.validation)
    for k, best in enumerate(trained.history.best_epoch):
        assert val[best, k] == pytest.approx(val[: best + 1, k].min())
    # Training ended when the last member ran out of patience, before the epoch limit.
    assert len(val) == max(trained.history.best_epoch) + 1 + 3 < 30
    same = replace(config, patience=0, epochs=3)
    assert len(fit_ensemble(x, y, xv, yv, 2, same).history.train) == 3


def test_improvements_below_min_improvement_do_not_extend_training() -> None:
    x, y, xv, yv = _tiny_problem()
    config = EnsembleConfig(
        members=2, hidden=(8,), epochs=30, batch_size=64, device="cpu", patience=4, progress=False
    )
    # No drop can reach 100%: every member runs out of patience after exactly 4 epochs...
    strict = fit_ensemble(x, y, xv, yv, 2, replace(config, min_improvement=1.0))
    assert len(strict.history.train) == 4
    # ...while its best epoch is still tracked on any improvement at all.
    val = np.array(strict.history.validation)
    for k, best in enumerate(strict.history.best_epoch):
        assert val[best, k] == pytest.approx(val[:, k].min())
    lenient = fit_ensemble(x, y, xv, yv, 2, replace(config, min_improvement=0.0))
    assert len(lenient.history.train) > 4
