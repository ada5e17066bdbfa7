"""Explanations of a real trained bundle against shap's exact explainer, and their additivity."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from service.bundle import CategoricalFeature
from service.explain import (
    Background,
    BackgroundError,
    InstanceExplanation,
    choose_plan,
    exact_plan,
    explain_rows,
    load_background,
    permutation_plan,
)
from service.runtime import LoadedModel
from tests.service.explain_support import reference_columns, train_tiny_bundle

with warnings.catch_warnings():  # shap's colour maps use matplotlib calls it deprecates
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    import shap  # type: ignore[import-untyped]

pytestmark = pytest.mark.slow  # trains a bundle

BACKGROUND_ROWS = 20
#: Permutation estimates vs the exact values on 10 rows of the tiny bundle (attributions up to
#: ~0.3): measured max errors 0.003-0.0065 at 16 orders per row and 0.0005-0.0013 at 256 over
#: five seeds; the bounds leave a factor 2-3 for other platforms' float rounding in training.
PERMUTATION_TOLERANCE = {16: 0.015, 256: 0.004}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return train_tiny_bundle(tmp_path_factory.mktemp("explain_models"))


@pytest.fixture(scope="module")
def background(model: LoadedModel) -> Background:
    return load_background(model.path, model.manifest, model.run, size=BACKGROUND_ROWS, seed=3)


def explain(
    model: LoadedModel, background: Background, plan: object, start: int = 100, rows: int = 10
) -> list[InstanceExplanation]:
    return explain_rows(
        model.run,
        model.manifest.feature_names,
        model.manifest.classes,
        reference_columns(model, start, rows),
        background,
        level=0.95,
        plan=plan,  # type: ignore[arg-type]
    )


def stacked(explanations: list[InstanceExplanation]) -> NDArray[np.float64]:
    return np.stack([e.attributions for e in explanations])


def as_codes(model: LoadedModel, columns: dict[str, NDArray[np.generic]]) -> NDArray[np.float64]:
    """Rows as a float matrix shap can mask: categorical values as their category index."""
    out = []
    for feature in model.manifest.features:
        column = columns[feature.name][:, 0]
        if isinstance(feature, CategoricalFeature):
            lookup = {c: float(i) for i, c in enumerate(feature.categories)}
            out.append(np.array([lookup[v] for v in column]))
        else:
            out.append(column.astype(np.float64))
    return np.stack(out, axis=1)


def served_probability(model: LoadedModel):  # type: ignore[no-untyped-def]
    """The served probability (members' mean) of code matrices, run through the same session."""

    def f(codes: NDArray[np.float64]) -> NDArray[np.float64]:
        columns: dict[str, NDArray[np.generic]] = {}
        for j, feature in enumerate(model.manifest.features):
            if isinstance(feature, CategoricalFeature):
                names = np.array(feature.categories, dtype=object)
                columns[feature.name] = names[codes[:, j].astype(int)].reshape(-1, 1)
            else:
                columns[feature.name] = codes[:, j : j + 1].astype(np.float32)
        mean: NDArray[np.float64] = model.run(columns).astype(np.float64).mean(axis=1)
        return mean

    return f


def test_the_tiny_bundle_has_categorical_features(model: LoadedModel) -> None:
    # The shap comparison below covers the object columns only if the bundle has some.
    assert model.manifest.categorical_feature_names == ["colour", "size"]
    assert choose_plan(len(model.manifest.features), BACKGROUND_ROWS).method == "exact"


def test_exact_matches_shap_exact_explainer(model: LoadedModel, background: Background) -> None:
    ours = explain(model, background, exact_plan(len(model.manifest.features)))
    masker = shap.maskers.Independent(
        as_codes(model, background.columns), max_samples=BACKGROUND_ROWS
    )
    explainer = shap.explainers.Exact(served_probability(model), masker)
    theirs = explainer(as_codes(model, reference_columns(model, 100, 10)))
    assert theirs.values.shape == (10, 6, 2)
    np.testing.assert_allclose(stacked(ours), theirs.values, atol=1e-6)
    np.testing.assert_allclose(
        np.stack([e.base_values for e in ours]), theirs.base_values, atol=1e-6
    )
    # The attributions are not all zero: the comparison means something.
    assert np.abs(theirs.values).max() > 0.05


def test_exact_is_additive_on_the_real_bundle(model: LoadedModel, background: Background) -> None:
    ours = explain(model, background, exact_plan(6), start=0, rows=16)
    for e in ours:
        assert np.abs(e.additivity_error).max() <= 1e-6
        # The prediction is the served one: the members' mean of the model's own output.
    first = reference_columns(model, 0, 1)
    np.testing.assert_allclose(ours[0].prediction, model.run(first).mean(axis=1)[0], atol=1e-6)
    np.testing.assert_allclose(ours[0].base_values, background.base_values)


@pytest.mark.parametrize("permutations", sorted(PERMUTATION_TOLERANCE))
def test_permutation_agrees_with_exact(
    model: LoadedModel, background: Background, permutations: int
) -> None:
    exact = stacked(explain(model, background, exact_plan(6)))
    plan = permutation_plan(6, permutations, BACKGROUND_ROWS, seed=0)
    sampled = explain(model, background, plan)
    error = np.abs(stacked(sampled) - exact).max()
    assert error <= PERMUTATION_TOLERANCE[permutations]
    assert sampled[0].method == f"permutation(n={permutations})"
    # Every order's contributions telescope to f(x) - f(b): additive whatever the sample.
    for e in sampled:
        assert np.abs(e.additivity_error).max() <= 1e-6


def test_member_intervals_contain_the_attribution(
    model: LoadedModel, background: Background
) -> None:
    for e in explain(model, background, exact_plan(6)):
        assert np.all(e.lower <= e.attributions)
        assert np.all(e.attributions <= e.upper)
        # Members disagree somewhere, so some intervals have width.
        assert (e.upper - e.lower).max() > 0
        np.testing.assert_allclose(e.member_attributions.mean(axis=1), e.attributions)


def test_background_is_a_seeded_draw(model: LoadedModel, background: Background) -> None:
    again = load_background(model.path, model.manifest, model.run, size=BACKGROUND_ROWS, seed=3)
    other = load_background(model.path, model.manifest, model.run, size=BACKGROUND_ROWS, seed=4)
    np.testing.assert_array_equal(again.columns["x1"], background.columns["x1"])
    assert not np.array_equal(other.columns["x1"], background.columns["x1"])
    assert background.rows == BACKGROUND_ROWS
    assert background.columns["colour"].dtype == object


def test_missing_reference_is_a_clear_error(model: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(BackgroundError, match=r"has no reference\.parquet"):
        load_background(tmp_path, model.manifest, model.run)
