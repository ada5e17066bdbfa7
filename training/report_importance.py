"""The model card's global feature importance: mean |attribution| of the served probability over a
seeded sample of test rows, per feature, with the members' spread, as Markdown, a bar chart and
``importance.json``.

Attributions come from the service's explanation engine (:mod:`service.explain`) at the
explainer's default settings (background rows and seed, sampled orders and their seed, the exact
enumeration limit), run on the staged bundle's own ``model.onnx`` with its ``reference.parquet``
as the background, so the card states what the explain endpoint would return on those rows.
Binary target: the positive class only, since the other class's served probability is one minus
it and its attributions are the same numbers with the opposite sign. More classes: the mean over
classes of each class's mean |attribution| (one ranking, however many classes), the per-class
figures in ``importance.json``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines

import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from service.bundle import MEMBER_PROBABILITIES_OUTPUT, MODEL_FILE, Feature, Manifest, graph_columns
from service.bundle.manifest import FeatureValue
from service.explain import (
    ExplainerSettings,
    InstanceExplanation,
    choose_plan,
    explain_rows,
    global_importance,
    load_background,
)
from service.fairness import POSITIVE_CLASS
from training.preprocess import json_inputs

IMPORTANCE_JSON = "importance.json"
IMPORTANCE_PNG = "importance.png"


@dataclass(frozen=True)
class ImportanceInputs:
    """Test rows to explain: raw values column-wise (None = missing) and where they came from."""

    values: dict[str, list[FeatureValue]]
    #: Positions in the test split; reference.parquet keeps its rows in that order while it
    #: holds every held-out row (under MAX_REFERENCE_ROWS), so tools can find them there.
    positions: list[int]
    test_rows: int
    seed: int
    level: float


def sample_positions(rows: int, max_rows: int, seed: int) -> NDArray[np.intp]:
    """Sorted positions of at most ``max_rows`` of ``rows`` rows, drawn without replacement."""
    if rows <= max_rows:
        return np.arange(rows)
    picked = np.random.default_rng(seed).choice(rows, size=max_rows, replace=False)
    return np.sort(picked)


def importance_inputs(
    test: pd.DataFrame, features: Sequence[Feature], max_rows: int, *, seed: int, level: float
) -> ImportanceInputs | None:
    """A seeded sample of at most ``max_rows`` test rows to explain; None when ``max_rows`` is 0."""
    if max_rows == 0:
        return None
    positions = sample_positions(len(test), max_rows, seed)
    return ImportanceInputs(
        values=json_inputs(test.iloc[positions], features),
        positions=[int(p) for p in positions],
        test_rows=len(test),
        seed=seed,
        level=level,
    )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImportanceFigure(_Model):
    """Mean |attribution| and its interval from the members' spread."""

    importance: float
    lower: float
    upper: float


class FeatureImportance(_Model):
    """One feature: the card's figure (see ``ImportanceReport.summary``) and each class's."""

    feature: str
    importance: float
    lower: float
    upper: float
    classes: dict[str, ImportanceFigure]


Summary = Literal["positive_class", "mean_over_classes"]


class ImportanceReport(_Model):
    """Everything the card's importance section states, as ``report/importance.json`` holds it."""

    split: str = "test"
    test_rows: int
    rows: int
    positions: list[int]
    sample_seed: int
    method: str
    background_rows: int
    background_seed: int
    members: int
    level: float
    classes: list[str]
    #: What ``importance`` of a feature is: the positive class's, or the mean over classes.
    summary: Summary
    positive_class: str | None
    seconds: float
    #: Every feature, by decreasing ``importance`` (ties keep the manifest's order).
    features: list[FeatureImportance]


def _class_mean(explanation: InstanceExplanation) -> InstanceExplanation:
    # global_importance takes |.| of the attributions it is given, and |x| of a non-negative x is
    # x: fed each row's mean over classes of |attribution| (served and per member), it returns
    # the mean over classes of the importance with the members' spread of that very figure.
    served = np.abs(explanation.attributions).mean(axis=1, keepdims=True)  # [F, 1]
    members = np.abs(explanation.member_attributions).mean(axis=2, keepdims=True)  # [F, K, 1]
    return dataclasses.replace(
        explanation, attributions=served, lower=served, upper=served, member_attributions=members
    )


def summarise(
    explanations: Sequence[InstanceExplanation],
    names: Sequence[str],
    classes: Sequence[str],
    level: float,
) -> tuple[list[FeatureImportance], Summary]:
    """Every feature's figures by decreasing importance, and which figure ranks them: the
    positive class's for two classes, else the mean over classes."""
    per_class = global_importance(explanations, level)
    if len(classes) == 2:
        summary: Summary = "positive_class"
        card, column = per_class, POSITIVE_CLASS
    else:
        summary = "mean_over_classes"
        card, column = global_importance([_class_mean(e) for e in explanations], level), 0
    features = [
        FeatureImportance(
            feature=names[f],
            importance=float(card.importance[f, column]),
            lower=float(card.lower[f, column]),
            upper=float(card.upper[f, column]),
            classes={
                c: ImportanceFigure(
                    importance=float(per_class.importance[f, i]),
                    lower=float(per_class.lower[f, i]),
                    upper=float(per_class.upper[f, i]),
                )
                for i, c in enumerate(classes)
            },
        )
        for f in card.order(column)
    ]
    return features, summary


def importance_report(
    bundle_dir: Path,
    manifest: Manifest,
    inputs: ImportanceInputs,
    settings: ExplainerSettings | None = None,
) -> ImportanceReport:
    """Explain the sampled test rows with the bundle in ``bundle_dir`` (its model.onnx, manifest
    and reference.parquet written already) and sum them up; see the module doc."""
    settings = settings if settings is not None else ExplainerSettings()
    started = time.perf_counter()
    session = ort.InferenceSession(str(bundle_dir / MODEL_FILE), providers=["CPUExecutionProvider"])

    def run(columns: Mapping[str, NDArray[np.generic]]) -> NDArray[np.float32]:
        out = session.run([MEMBER_PROBABILITIES_OUTPUT], dict(columns))[0]
        return np.asarray(out, dtype=np.float32)

    background = load_background(
        bundle_dir, manifest, run, size=settings.background_size, seed=settings.background_seed
    )
    plan = choose_plan(
        len(manifest.features),
        background.rows,
        permutations=settings.permutations,
        seed=settings.permutation_seed,
        max_exact_features=settings.max_exact_features,
    )
    explanations = explain_rows(
        run,
        manifest.feature_names,
        manifest.classes,
        graph_columns(manifest.features, inputs.values),
        background,
        level=inputs.level,
        plan=plan,
        chunk_rows=settings.chunk_rows,
    )
    features, summary = summarise(
        explanations, manifest.feature_names, manifest.classes, inputs.level
    )
    return ImportanceReport(
        test_rows=inputs.test_rows,
        rows=len(explanations),
        positions=inputs.positions,
        sample_seed=inputs.seed,
        method=plan.method,
        background_rows=background.rows,
        background_seed=settings.background_seed,
        members=manifest.members,
        level=inputs.level,
        classes=list(manifest.classes),
        summary=summary,
        positive_class=manifest.classes[POSITIVE_CLASS] if summary == "positive_class" else None,
        seconds=round(time.perf_counter() - started, 3),
        features=features,
    )


def write_importance(report: ImportanceReport, report_dir: Path) -> None:
    """Write ``importance.json`` (pretty) and the bar chart ``importance.png`` into the report."""
    (report_dir / IMPORTANCE_JSON).write_text(report.model_dump_json(indent=2) + "\n")
    plot_importance(report, report_dir / IMPORTANCE_PNG)


def read_importance_json(report_dir: Path) -> ImportanceReport:
    """Read a bundle's ``report/importance.json``."""
    return ImportanceReport.model_validate_json((report_dir / IMPORTANCE_JSON).read_bytes())


def _what(report: ImportanceReport) -> str:
    if report.summary == "positive_class":
        return f"P(`{report.positive_class}`)"
    return f"each class's probability, mean over the {len(report.classes)} classes"


def plot_importance(report: ImportanceReport, path: Path) -> None:
    """Horizontal bars, most important feature on top, error bars from the members' spread."""
    features = report.features
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.28 * len(features)), dpi=100)
    y = np.arange(len(features))[::-1]
    value = np.array([f.importance for f in features])
    below = value - np.array([f.lower for f in features])
    above = np.array([f.upper for f in features]) - value
    ax.barh(y, value, xerr=np.stack([below, above]), color="tab:blue", alpha=0.7, capsize=2)
    ax.set_yticks(y, [f.feature for f in features], fontsize=8)
    ax.set(
        xlabel=f"mean |attribution| of {_what(report).replace('`', '')}",
        title=f"Global feature importance\n({report.rows} test rows, error bars: "
        f"{round(report.level * 100)}% members' spread)",
    )
    ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def importance_card(report: ImportanceReport) -> list[str]:
    """Markdown lines of the card's "Global feature importance" section."""
    level = f"{round(report.level * 100)}%"
    sample = (
        f"all {report.rows} rows of the test split"
        if report.rows == report.test_rows
        else f"{report.rows} of the {report.test_rows} test rows, drawn with seed "
        f"{report.sample_seed}"
    )
    if report.summary == "positive_class":
        which = (
            f"The figure is for the served probability of `{report.positive_class}`; the other "
            "class's attributions are the same numbers with the opposite sign."
        )
    else:
        which = (
            f"The figure is the mean over the {len(report.classes)} classes of each class's "
            "mean |attribution| (one ranking for every class); `importance.json` holds each "
            "class's own figures."
        )
    method = (
        "computed exactly (every coalition of the features enumerated)"
        if report.method == "exact"
        else f"estimated by `{report.method}` (that many sampled feature orders per background "
        "row, half of them the reverse of the other half, as the service does for models too "
        "wide to enumerate; each row's attributions still add up exactly, but their sampling "
        "noise raises a mean |attribution| a little, most visibly for a feature with no effect)"
    )
    lines = [
        "## Global feature importance",
        "",
        f"Mean |attribution| of the served probability over {sample}: how far, on average, a "
        "feature moves the probability away from its mean over the background, in probability "
        f"units. {which} Attributions are interventional Shapley values as the explain endpoint "
        f"computes them, {method}, against {report.background_rows} background rows "
        f"drawn with seed {report.background_seed} from `reference.parquet`. In brackets the "
        f"members' spread at {level}: each of the {report.members} members' own mean "
        f"|attribution| over the same rows, figure +- t(K-1) x their sd (lower end clipped at "
        "0), the sampling variability of the fitted model as in the probability intervals; it "
        f"is not an error bar over the rows explained. Computed in {report.seconds:.1f} s; "
        "figures in `importance.json`.",
        "",
        f"| rank | feature | mean abs attribution [{level} members' spread] |",
        "|---|---|---|",
    ]
    for rank, f in enumerate(report.features, start=1):
        lines.append(
            f"| {rank} | `{f.feature}` | {f.importance:.4f} [{f.lower:.4f}, {f.upper:.4f}] |"
        )
    lines += ["", f"![global feature importance]({IMPORTANCE_PNG})", ""]
    return lines
