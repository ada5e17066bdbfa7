"""The bundle's training report (model card, reliability diagram, loss curves) and reference data.

The report is written into the staging directory by :func:`training.bundle_writer.write_bundle`
through the callable from :func:`report_writer`, so it is published atomically with the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from service.bundle import CategoricalFeature, Manifest, NumericFeature
from service.bundle.manifest import (
    REFERENCE_INTERVAL_WIDTH_COLUMN,
    REFERENCE_LABEL_COLUMN,
    REFERENCE_PREDICTION_COLUMN,
    REFERENCE_PROBABILITY_PREFIX,
    REFERENCE_SET_SIZE_COLUMN,
    REFERENCE_SPLIT_COLUMN,
)
from service.uncertainty import ECE_BINS, ReliabilityBins
from training.ensemble import TrainingHistory
from training.report_fairness import FairnessReport, fairness_card, write_fairness_json
from training.report_importance import (
    ImportanceInputs,
    ImportanceReport,
    importance_card,
    importance_report,
    write_importance,
)
from training.served_outputs import served_outputs

MODEL_CARD = "model_card.md"
RELIABILITY_PNG = "reliability.png"
LOSS_CURVES_PNG = "loss_curves.png"
MAX_REFERENCE_ROWS = 50_000
#: Splits whose rows make the reference: none of them was fitted by a member.
HELD_OUT_SPLITS = ("validation", "calibration", "test")
#: Interval level recorded as the reference interval width (the service default).
REFERENCE_LEVEL = 0.95


@dataclass(frozen=True)
class ReportInputs:
    """What the report states besides the manifest: data, splits, curves, parity."""

    source: str
    split_rows: Mapping[str, int]
    history: TrainingHistory
    reliability: ReliabilityBins
    parity_max_abs_diff: float
    parity_rows: int
    synthetic: bool
    device: str
    #: Fairness slices of the sensitive columns; None when the model has none.
    fairness: FairnessReport | None = None
    #: Test rows whose explanations make the global feature importance; None: no such section.
    importance: ImportanceInputs | None = None


def report_writer(inputs: ReportInputs) -> Callable[[Path, Manifest], None]:
    """A ``write_report(report_dir, manifest)`` callable for the bundle writer."""

    def write(report_dir: Path, manifest: Manifest) -> None:
        report_dir.mkdir(parents=True, exist_ok=True)
        plot_reliability(inputs.reliability, report_dir / RELIABILITY_PNG)
        plot_loss_curves(inputs.history, report_dir / LOSS_CURVES_PNG)
        importance = None
        if inputs.importance is not None:
            # The bundle writer calls this with model.onnx, the manifest and reference.parquet
            # already in the staged bundle (report_dir's parent): the explanations run on them.
            importance = importance_report(report_dir.parent, manifest, inputs.importance)
            write_importance(importance, report_dir)
        (report_dir / MODEL_CARD).write_text(model_card(manifest, inputs, importance))
        if inputs.fairness is not None:
            write_fairness_json(inputs.fairness, report_dir)

    return write


def plot_reliability(bins: ReliabilityBins, path: Path) -> None:
    """Reliability diagram: accuracy vs mean confidence per bin, with the diagonal."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    edges = np.linspace(0.0, 1.0, len(bins.count) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    used = bins.count > 0
    ax.bar(
        centres[used],
        bins.accuracy[used],
        width=1.0 / len(bins.count),
        alpha=0.6,
        edgecolor="black",
        label="accuracy",
    )
    ax.plot(
        bins.confidence[used], bins.accuracy[used], "o", color="tab:red", label="mean confidence"
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(
        xlabel="top-label confidence",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"Reliability (test split, {len(bins.count)} bins)",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_loss_curves(history: TrainingHistory, path: Path) -> None:
    """Training loss (mean over active members) and each member's validation loss per epoch."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    epochs = np.arange(1, len(history.train) + 1)
    ax.plot(epochs, history.train, color="black", lw=2, label="train (mean of active members)")
    val = np.array(history.validation, dtype=np.float64)
    for k in range(val.shape[1] if val.ndim == 2 else 0):
        ax.plot(
            epochs[: len(val)],
            val[:, k],
            lw=1,
            alpha=0.7,
            label="validation, per member" if k == 0 else None,
        )
        best = history.best_epoch[k]
        if best < len(val):
            ax.plot(best + 1, val[best, k], "v", color="tab:red", ms=5)
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss curves (▼ best epoch per member)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def model_card(
    manifest: Manifest, inputs: ReportInputs, importance: ImportanceReport | None = None
) -> str:
    """The Markdown model card: data, model, calibration, every test figure and what it means."""
    m = manifest.metrics
    t = manifest.training
    numeric = [f for f in manifest.features if isinstance(f, NumericFeature)]
    categorical = [f for f in manifest.features if isinstance(f, CategoricalFeature)]
    lines = [
        f"# Model card: {manifest.name}",
        "",
        f"Trained {manifest.created_at:%Y-%m-%d %H:%M UTC} from `{inputs.source}` on "
        f"{inputs.device}. Target `{manifest.target}`, {len(manifest.classes)} classes: "
        + ", ".join(f"`{c}`" for c in manifest.classes)
        + ".",
        "",
        "## Data",
        "",
        "| split | rows | used for |",
        "|---|---|---|",
        f"| train | {inputs.split_rows['train']} | fitting the members (bootstrap resamples) "
        "and the preprocessing |",
        f"| validation | {inputs.split_rows['validation']} | early stopping, the temperature |",
        f"| calibration | {inputs.split_rows['calibration']} | conformal scores only |",
        f"| test | {inputs.split_rows['test']} | every figure below |",
        "",
        "The drift baseline `reference.parquet` holds the validation, calibration and test rows "
        "(never training rows, which the members fitted and are surer of than of any new row) "
        "with the served outputs: probability per class, interval width and prediction-set size "
        "at 95%.",
        "",
        f"Features: {len(numeric)} numeric (missing values imputed with the training mean, then "
        f"standardised), {len(categorical)} categorical (one-hot over the training categories, "
        "missing or unseen values go to an unknown bucket). Data fingerprint "
        f"`{manifest.data_fingerprint[:16]}`.",
        "",
        "## Model",
        "",
        f"Deep ensemble of {manifest.members} MLPs (hidden layers {t.get('hidden')}, ReLU, "
        f"softmax), optimiser {t.get('optimizer')}, learning rate {t.get('learning_rate')}, "
        f"weight decay {t.get('weight_decay')}, batch size {t.get('batch_size')}, at most "
        f"{t.get('epochs')} epochs with patience {t.get('patience')}, seed {t.get('seed')}. Each "
        "member is trained on its own bootstrap resample of the training split from its own "
        "initialisation; all members are trained together as batched weight tensors. Best "
        "epochs per member: "
        + ", ".join(str(e + 1) for e in inputs.history.best_epoch)
        + f"; training took {inputs.history.seconds:.1f} s.",
        "",
        "## Calibration and uncertainty",
        "",
        "One temperature shared by every member, "
        + (
            f"T = {manifest.calibration.temperatures[0]:.3f}, fitted so that the MEAN of the "
            "member probabilities (what is served) minimises the negative log-likelihood of the "
            "validation split, a MAP fit in log T with a weak prior (sd 1) centred on T = 1 "
            "that keeps a split the members separate perfectly from driving T to 0"
            if manifest.calibration.temperature_objective == "ensemble_mean"
            else "per-member temperatures "
            + ", ".join(f"{x:.3f}" for x in manifest.calibration.temperatures)
        )
        + ". Fitted on the validation split so the calibration split stays untouched for the "
        "conformal guarantee.",
        "",
        "| mean of | ECE | accuracy | estimated accuracy |",
        "|---|---|---|---|",
        f"| members at T = 1 | {_fmt(m.get('ece_uncalibrated'))} | "
        f"{_fmt(m.get('accuracy_uncalibrated'))} | "
        f"{_fmt(m.get('estimated_accuracy_uncalibrated'))} |",
        f"| members calibrated one by one (schema 1) | {_fmt(m.get('ece_member_temperatures'))} "
        f"| {_fmt(m.get('accuracy_member_temperatures'))} | "
        f"{_fmt(m.get('estimated_accuracy_member_temperatures'))} |",
        f"| **served** (temperature for the mean) | {_fmt(m.get('ece'))} | "
        f"{_fmt(m.get('accuracy'))} | {_fmt(m.get('estimated_accuracy'))} |",
        "",
        "Test split. The estimated accuracy is the mean top-class probability: the label-free "
        "estimate the drift job reports, right only as far as the mean is calibrated. Averaging "
        "members that were calibrated one by one makes an underconfident mean, hence one "
        "temperature fitted for the mean.",
        "",
        "- **probability**: the mean of the temperature-scaled member probabilities.",
        "- **interval** at level 1-a: mean member logit +- t(K-1 dof) x member spread, mapped "
        "back to (0, 1); it estimates how far the fitted probability would move with other "
        "training data (sampling variability), not label noise.",
        "- **prediction set** at level 1-a: split-conformal (LAC score 1 - p(true class)) from "
        f"{len(manifest.calibration.conformal_scores)} calibration rows; marginal coverage >= "
        "1-a in finite samples.",
        "",
        "## Test-split figures",
        "",
        "| figure | value | meaning |",
        "|---|---|---|",
        f"| accuracy | {_fmt(m.get('accuracy'))} | share of rows whose top class is right |",
        f"| macro ROC AUC | {_fmt(m.get('roc_auc_macro'))} | one-vs-rest, averaged over classes |",
        f"| log loss | {_fmt(m.get('log_loss'))} | mean -log probability of the true class |",
        f"| Brier score | {_fmt(m.get('brier'))} | mean over rows of sum over classes of "
        "(p - 1[y=c])² (twice the binary convention) |",
        f"| ECE ({ECE_BINS} bins) | {_fmt(m.get('ece'))} | top-label expected calibration error |",
        f"| estimated accuracy | {_fmt(m.get('estimated_accuracy'))} | mean top-class "
        "probability: the label-free estimate of accuracy |",
    ]
    for tag in ("90", "95"):
        lines.append(
            f"| conformal coverage at {tag}% | {_fmt(m.get(f'conformal_coverage_{tag}'))} | "
            f"share of rows whose true class is in the {tag}% set (guarantee: >= 0.{tag}) |"
        )
        lines.append(
            f"| mean set size at {tag}% | {_fmt(m.get(f'conformal_set_size_{tag}'))} | "
            "classes per prediction set |"
        )
    for tag in ("90", "95"):
        lines.append(
            f"| mean interval width at {tag}% | {_fmt(m.get(f'interval_width_{tag}'))} | "
            "upper - lower, averaged over rows and classes |"
        )
    if inputs.synthetic:
        for tag in ("90", "95"):
            lines.append(
                f"| true-probability coverage at {tag}% | "
                f"{_fmt(m.get(f'true_proba_coverage_{tag}'))} | share of rows whose {tag}% "
                "interval contains the true P(y=c|x) for EVERY class |"
            )
            lines.append(
                f"| … for the predicted class only | "
                f"{_fmt(m.get(f'true_proba_coverage_predicted_{tag}'))} | same, predicted class |"
            )
    lines += [
        "",
        "![reliability diagram](reliability.png)",
        "",
        "![loss curves](loss_curves.png)",
        "",
        "## Export check",
        "",
        f"The ONNX graph (preprocessing and all members) was run with onnxruntime on "
        f"{inputs.parity_rows} rows (real test rows and random rows with missing values and "
        f"unseen categories) and matched PyTorch to a max abs difference of "
        f"{inputs.parity_max_abs_diff:.2e} (limit 1e-5). model.onnx sha256 "
        f"`{manifest.model_sha256}`.",
        "",
        *(importance_card(importance) if importance is not None else []),
        *(fairness_card(inputs.fairness) if inputs.fairness is not None else []),
        "## Limits",
        "",
        "The figures hold for data like the test split. The intervals measure the model's "
        "sampling variability only; they do not cover bias from a model family that cannot "
        "represent the truth, and they widen less than they should far from the training data.",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class HeldOutRows:
    """One held-out split: raw rows, labels and the served member probabilities [N, K, C]."""

    split: str
    frame: pd.DataFrame
    labels: NDArray[np.int64]
    member_probabilities: NDArray[np.floating]


def build_reference(
    held_out: Sequence[HeldOutRows],
    classes: Sequence[str],
    conformal_scores: NDArray[np.floating],
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Drift baseline: held-out rows' raw features, label, split and served outputs (<= 50k rows).

    Every row is a row no member was fitted on (validation, calibration, test), so its outputs
    are as certain as the outputs on new rows; the training rows' outputs are more certain than
    any new row's and would show output drift on honest traffic (docs/architecture.md). Output
    columns: the mean probability per class, the width of the predicted class's interval and the
    size of the conformal prediction set, both at the service's default level. (The calibration
    rows' set sizes use the threshold their own scores set: a bias of at most one rank in n.)
    Columns of the frames besides the features (the context columns of sensitive columns kept
    out of the model, REFERENCE_CONTEXT_PREFIX) are carried as they are.
    """
    frame = pd.concat([h.frame for h in held_out], ignore_index=True)
    labels = np.concatenate([np.asarray(h.labels) for h in held_out])
    probs = np.concatenate([np.asarray(h.member_probabilities) for h in held_out], axis=0)
    splits = np.concatenate([np.full(len(h.frame), h.split, dtype=object) for h in held_out])
    n = len(frame)
    rows = np.arange(n)
    if n > MAX_REFERENCE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(n, MAX_REFERENCE_ROWS, replace=False))
    served = served_outputs(probs[rows], conformal_scores, REFERENCE_LEVEL)
    ref = frame.iloc[rows].reset_index(drop=True).copy()
    ref[REFERENCE_LABEL_COLUMN] = [classes[i] for i in labels[rows]]
    ref[REFERENCE_PREDICTION_COLUMN] = [classes[i] for i in served.predicted]
    for i, c in enumerate(classes):
        ref[f"{REFERENCE_PROBABILITY_PREFIX}{c}"] = served.mean[:, i]
    # Width of the predicted class's interval: one number per row for drift monitoring.
    ref[REFERENCE_INTERVAL_WIDTH_COLUMN] = served.interval_width
    ref[REFERENCE_SET_SIZE_COLUMN] = served.sets.sum(axis=1).astype(np.int64)
    ref[REFERENCE_SPLIT_COLUMN] = splits[rows]
    return ref
