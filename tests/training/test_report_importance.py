"""The card's global feature importance: the figures by hand on made-up explanations, the section,
chart and importance.json of trained bundles, the figures recomputed from the explanation engine,
a noise column ranked below the signal, and ``--importance-rows 0`` turning it all off."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from numpy.typing import NDArray

from service.bundle import (
    MEMBER_PROBABILITIES_OUTPUT,
    MODEL_FILE,
    REFERENCE_FILE,
    REPORT_DIR,
    graph_columns,
    read_manifest,
)
from service.bundle.manifest import REFERENCE_SPLIT_COLUMN
from service.explain import InstanceExplanation, choose_plan, explain_rows, load_background
from tests.training.helpers import CliOutcome, read_card, tiny_config
from training.pipeline import TrainResult, train
from training.report_importance import (
    IMPORTANCE_JSON,
    IMPORTANCE_PNG,
    ImportanceReport,
    importance_card,
    read_importance_json,
    sample_positions,
    summarise,
)

pytestmark = pytest.mark.slow

SECTION = "## Global feature importance"


def _explanation(members: list[list[list[float]]]) -> InstanceExplanation:
    """A made-up row: member attributions [F, K, C]; the served ones are the members' mean."""
    m = np.array(members, dtype=np.float64)
    served = m.mean(axis=1)
    classes = m.shape[2]
    return InstanceExplanation(
        label="x",
        prediction=np.full(classes, 1.0 / classes),
        base_values=np.full(classes, 1.0 / classes),
        attributions=served,
        lower=served,
        upper=served,
        member_attributions=m,
        method="exact",
        confidence_level=0.5,
    )


def test_binary_figures_by_hand_are_the_positive_class() -> None:
    # Two members, level 0.5: t at 1 degree of freedom and 0.75 is tan(pi/4) = 1, so the
    # interval is the figure +- the sd (ddof 1) of the members' own figures.
    # Feature a, class "yes": row 1 members 0.1, 0.3 (served 0.2); row 2 -0.2, -0.2 (served
    #   -0.2). Figure (0.2 + 0.2) / 2 = 0.2; members' own (0.1 + 0.2) / 2 = 0.15 and
    #   (0.3 + 0.2) / 2 = 0.25, sd 0.1 / sqrt(2) = 0.0707107: [0.1292893, 0.2707107].
    # Feature b: rows 0, 0 and 0.05, 0.05: figure 0.025, both members 0.025, sd 0.
    # Class "no" holds the opposite numbers (as a binary model's attributions do).
    a = [[[-0.1, 0.1], [-0.3, 0.3]], [[0.2, -0.2], [0.2, -0.2]]]
    b = [[[0.0, 0.0], [0.0, 0.0]], [[-0.05, 0.05], [-0.05, 0.05]]]
    rows = [_explanation([a[0], b[0]]), _explanation([a[1], b[1]])]
    features, summary = summarise(rows, ["fa", "fb"], ["no", "yes"], level=0.5)
    assert summary == "positive_class"
    assert [f.feature for f in features] == ["fa", "fb"]
    fa, fb = features
    assert fa.importance == pytest.approx(0.2)
    assert [fa.lower, fa.upper] == pytest.approx([0.1292893, 0.2707107])
    assert [fb.importance, fb.lower, fb.upper] == pytest.approx([0.025] * 3)
    assert fa.classes["no"].importance == pytest.approx(0.2)


def test_multiclass_figures_by_hand_are_the_mean_over_classes() -> None:
    # One row, three classes, two members, level 0.5 (t = 1).
    # Feature a: member 1 (0.3, -0.1, -0.2), member 2 (0.1, -0.1, 0.0); served (0.2, -0.1, -0.1).
    #   Figure: (0.2 + 0.1 + 0.1) / 3 = 0.1333333. Members' own: 0.6 / 3 = 0.2 and
    #   0.2 / 3 = 0.0666667, sd 0.1333333 / sqrt(2) = 0.0942809: [0.0390524, 0.2276142].
    #   Class 0 alone: 0.2, members 0.3 and 0.1, sd 0.1414214: [0.0585786, 0.3414214].
    # Feature b: both members (0, 0.3, -0.3): figure 0.2, sd 0. It ranks first.
    a = [[0.3, -0.1, -0.2], [0.1, -0.1, 0.0]]
    b = [[0.0, 0.3, -0.3], [0.0, 0.3, -0.3]]
    features, summary = summarise([_explanation([a, b])], ["fa", "fb"], ["p", "q", "r"], 0.5)
    assert summary == "mean_over_classes"
    assert [f.feature for f in features] == ["fb", "fa"]
    fb, fa = features
    assert [fb.importance, fb.lower, fb.upper] == pytest.approx([0.2] * 3)
    assert fa.importance == pytest.approx(0.1333333)
    assert [fa.lower, fa.upper] == pytest.approx([0.0390524, 0.2276142])
    p = fa.classes["p"]
    assert [p.importance, p.lower, p.upper] == pytest.approx([0.2, 0.0585786, 0.3414214])


def test_sample_positions_are_seeded_sorted_and_capped() -> None:
    assert sample_positions(5, 10, seed=0).tolist() == [0, 1, 2, 3, 4]
    drawn = sample_positions(100, 8, seed=3)
    assert len(set(drawn.tolist())) == 8 and drawn.tolist() == sorted(drawn.tolist())
    assert drawn.tolist() == sample_positions(100, 8, seed=3).tolist()
    assert drawn.tolist() != sample_positions(100, 8, seed=4).tolist()


def _report(result: TrainResult) -> ImportanceReport:
    return read_importance_json(result.bundle_path / REPORT_DIR)


def _check_figures(report: ImportanceReport, names: list[str]) -> None:
    assert sorted(f.feature for f in report.features) == sorted(names)
    values = [f.importance for f in report.features]
    assert values == sorted(values, reverse=True)
    for f in report.features:
        assert 0.0 <= f.lower <= f.importance <= f.upper
        for c in f.classes.values():
            assert 0.0 <= c.lower <= c.importance <= c.upper
    assert report.positions == sorted(set(report.positions))
    assert len(report.positions) == report.rows == min(64, report.test_rows)


def test_the_card_json_and_chart_of_an_exact_binary_bundle(synthetic_bundle: TrainResult) -> None:
    manifest = read_manifest(synthetic_bundle.bundle_path)
    report = _report(synthetic_bundle)
    _check_figures(report, manifest.feature_names)
    assert report.summary == "positive_class" and report.positive_class == "yes"
    assert (report.method, report.background_rows, report.level) == ("exact", 25, 0.95)
    assert report.rows == 64 and report.test_rows == manifest.training["rows_test"]
    card = read_card(synthetic_bundle)
    section = card[card.index(SECTION) :]
    assert f"over 64 of the {report.test_rows} test rows, drawn with seed 0" in section
    assert "computed exactly" in section and "against 25 background rows" in section
    assert "members' spread at 95%" in section and "served probability of `yes`" in section
    table = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert table == importance_card(report)[6 : 6 + len(manifest.features)]
    assert [line.split("`")[1] for line in table] == [f.feature for f in report.features]
    png = synthetic_bundle.bundle_path / REPORT_DIR / IMPORTANCE_PNG
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({IMPORTANCE_PNG})" in section


def test_importance_is_the_engines_mean_abs_attribution(synthetic_bundle: TrainResult) -> None:
    # Recomputed from scratch on the rows importance.json names: the bundle's graph, a
    # background of 25 reference rows (seed 0), the engine's plan; then mean |attribution| of
    # P(yes) by hand. The same computation on the same bytes: equal, not close.
    bundle = synthetic_bundle.bundle_path
    manifest = read_manifest(bundle)
    report = _report(synthetic_bundle)
    session = ort.InferenceSession(str(bundle / MODEL_FILE), providers=["CPUExecutionProvider"])

    def run(columns: Mapping[str, NDArray[np.generic]]) -> NDArray[np.float32]:
        return np.asarray(session.run([MEMBER_PROBABILITIES_OUTPUT], dict(columns))[0])

    background = load_background(bundle, manifest, run, size=25, seed=0)
    reference = pd.read_parquet(bundle / REFERENCE_FILE)
    test = reference[reference[REFERENCE_SPLIT_COLUMN] == "test"].reset_index(drop=True)
    assert len(test) == report.test_rows
    rows = test.iloc[report.positions]
    values = {n: [None if pd.isna(v) else v for v in rows[n]] for n in manifest.feature_names}
    explanations = explain_rows(
        run,
        manifest.feature_names,
        manifest.classes,
        graph_columns(manifest.features, values),
        background,
        level=0.95,
        plan=choose_plan(len(manifest.features), background.rows),
    )
    yes = manifest.classes.index("yes")
    expected = np.abs(np.stack([e.attributions[:, yes] for e in explanations])).mean(axis=0)
    found = {f.feature: f.importance for f in report.features}
    assert [found[n] for n in manifest.feature_names] == expected.tolist()


def test_a_permutation_bundle_states_its_method(breast_cancer_bundle: TrainResult) -> None:
    manifest = read_manifest(breast_cancer_bundle.bundle_path)
    report = _report(breast_cancer_bundle)
    assert report.method == "permutation(n=16)" and report.rows == 8
    assert len(report.features) == 30
    for f in report.features:
        assert 0.0 <= f.lower <= f.importance <= f.upper
    assert report.positive_class == manifest.classes[1]
    assert "estimated by `permutation(n=16)`" in read_card(breast_cancer_bundle)


def test_a_multiclass_bundle_ranks_by_the_mean_over_classes(digits_bundle: TrainResult) -> None:
    manifest = read_manifest(digits_bundle.bundle_path)
    report = _report(digits_bundle)
    assert report.summary == "mean_over_classes" and report.positive_class is None
    assert len(report.features) == 64 and report.rows == 2
    for f in report.features:
        assert 0.0 <= f.lower <= f.importance <= f.upper
        assert list(f.classes) == manifest.classes
        # Mean over rows then classes = mean over classes then rows, up to rounding.
        per_class = [c.importance for c in f.classes.values()]
        assert f.importance == pytest.approx(np.mean(per_class), rel=1e-12, abs=1e-15)
    assert "the mean over the 10 classes" in read_card(digits_bundle)


def test_signal_features_rank_above_the_noise_column(tmp_path: Path) -> None:
    # synthetic_multiclass: the logits depend on x1, x2, x3 (and the category) and never on
    # `noise` (see training.data.synthetic_multiclass_frame).
    result = train(
        tiny_config(
            "synthetic_multiclass", tmp_path, synthetic_rows=3000, importance_rows=64, seed=1
        )
    )
    report = _report(result)
    ranked = [f.feature for f in report.features]
    assert report.method == "exact" and report.summary == "mean_over_classes"
    assert max(ranked.index(n) for n in ("x1", "x2", "x3")) < ranked.index("noise")


def test_importance_rows_zero_turns_the_section_off(
    tmp_path: Path, probserve: Callable[..., CliOutcome]
) -> None:
    repo = tmp_path / "models"
    args = ["--data", "synthetic", "--synthetic-rows", "600", "--members", "2", "--epochs", "3"]
    out = probserve("train", *args, "--model-repository", repo, "--importance-rows", "0")
    assert out.code == 0, out.err
    bundle = repo / "synthetic" / "1"
    assert SECTION not in (bundle / REPORT_DIR / "model_card.md").read_text()
    assert not (bundle / REPORT_DIR / IMPORTANCE_JSON).exists()
    assert not (bundle / REPORT_DIR / IMPORTANCE_PNG).exists()
    assert read_manifest(bundle).training["importance_rows"] == 0
    bad = probserve("train", *args, "--model-repository", repo, "--importance-rows", "-1")
    assert bad.code == 2 and "--importance-rows" in bad.err
