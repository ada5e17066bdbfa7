"""Load a labelled table: builtin data sets, a synthetic generator with known P(y|x), or a file.

Every source ends as a :class:`Dataset`: raw feature columns (numeric as float64 with NaN for
missing, categorical as ``str`` objects with ``None`` for missing), integer labels into ``classes``
(the target's values as strings) and, for ``synthetic`` only, the true class probabilities.

Column kinds are inferred and can be overridden: a column whose pandas dtype is numeric (ints and
floats) is numeric; everything else (object, string, bool, category, datetime) is categorical.
Low-cardinality integer codes therefore stay numeric unless ``--categorical COL`` says otherwise;
guessing from cardinality misfires on counts and ratings, and the override is one flag.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from service.errors import UsageError

log = logging.getLogger(__name__)

BUILTIN_SOURCES = (
    "breast_cancer",
    "digits",
    "synthetic",
    "synthetic_multiclass",
    "synthetic_groups",
)
#: Builtin sources generated with known P(y|x), so interval coverage of the truth is measurable.
SYNTHETIC_SOURCES = ("synthetic", "synthetic_multiclass", "synthetic_groups")
SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")
SYNTHETIC_TARGET = "label"
#: Column prefix of the true probabilities written next to synthetic data.
TRUE_PROBABILITY_PREFIX = "true_proba_"
_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Dataset:
    """A labelled table ready for splitting; ``frame`` holds only the feature columns."""

    name: str
    frame: pd.DataFrame
    labels: NDArray[np.int64]
    classes: list[str]
    target: str
    numeric: list[str]
    categorical: list[str]
    true_probabilities: NDArray[np.float64] | None = None

    @property
    def feature_names(self) -> list[str]:
        """Feature columns in table order (the manifest's order)."""
        return list(self.frame.columns)

    def fingerprint(self) -> str:
        """sha256 over the features and labels: the same table gives the same fingerprint."""
        digest = hashlib.sha256()
        digest.update(",".join(self.frame.columns).encode())
        digest.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        digest.update(self.labels.tobytes())
        digest.update("\x1f".join(self.classes).encode())
        return digest.hexdigest()


def model_name_for(source: str) -> str:
    """Default model name: the builtin name or the data file's stem, made manifest-safe."""
    stem = source if source in BUILTIN_SOURCES else Path(source).stem
    name = _NAME_OK.sub("-", stem).strip("-.")
    return name or "model"


def load_dataset(
    source: str,
    *,
    target: str | None = None,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    synthetic_rows: int = 20_000,
    seed: int = 0,
    synthetic_output: Path | None = None,
) -> Dataset:
    """Load ``source`` (a builtin name or a CSV/Parquet path) as a :class:`Dataset`.

    Raises :class:`UsageError` with a one-line reason for any input problem.
    """
    if source == "breast_cancer":
        frame, target_values, target = _sklearn_frame("breast_cancer")
    elif source == "digits":
        frame, target_values, target = _sklearn_frame("digits")
    elif source in SYNTHETIC_SOURCES:
        frame, target_values, true_p = _GENERATORS[source](synthetic_rows, seed)
        if synthetic_output is not None:
            write_synthetic(synthetic_output, frame, target_values, true_p)
        return _build(source, frame, target_values, SYNTHETIC_TARGET, numeric, categorical, true_p)
    else:
        table = read_table(Path(source))
        if target is None:
            raise UsageError(
                f"{source} is a file: pass --target COLUMN naming its label column "
                f"(columns: {', '.join(map(str, table.columns[:20]))})"
            )
        if target not in table.columns:
            raise UsageError(
                f"target column '{target}' is not in {source}: pass --target with one of "
                f"{', '.join(map(str, table.columns[:20]))}"
            )
        target_values = table[target]
        frame = table.drop(columns=[target])
    if (
        target is not None
        and source in ("breast_cancer", "digits")
        and target != _builtin_target(source)
    ):
        log.info("ignoring --target %s for builtin data set %s", target, source)
    return _build(
        model_name_for(source),
        frame,
        target_values,
        _target_name(source, target),
        numeric,
        categorical,
        None,
    )


def _builtin_target(source: str) -> str:
    return "diagnosis" if source == "breast_cancer" else "digit"


def _target_name(source: str, target: str | None) -> str:
    if source in ("breast_cancer", "digits"):
        return _builtin_target(source)
    assert target is not None
    return target


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; a missing, empty, unreadable or unknown file is a UsageError."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UsageError(
            f"unknown file type '{suffix or path.name}' for {path}: pass a .csv or .parquet file "
            f"or one of {', '.join(BUILTIN_SOURCES)}"
        )
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist: check the --data path")
    if path.stat().st_size == 0:
        raise UsageError(f"data file {path} is empty: pass a file with a header and rows")
    try:
        table = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot read {path} as {suffix[1:]}: {first}") from exc
    if table.empty or len(table.columns) == 0:
        raise UsageError(f"data file {path} has no rows: pass a file with a header and rows")
    table.columns = [str(c) for c in table.columns]
    return table


def _sklearn_frame(name: str) -> tuple[pd.DataFrame, pd.Series, str]:
    from sklearn.datasets import load_breast_cancer, load_digits

    loader = load_breast_cancer if name == "breast_cancer" else load_digits
    bunch = loader(as_frame=True)
    frame = bunch.frame.drop(columns=["target"]).astype(np.float64)
    codes = bunch.target.to_numpy()
    # Class labels are strings: the data set's own names where it has them.
    names = [str(n) for n in bunch.target_names]
    target = pd.Series([names[int(c)] for c in codes], name=_builtin_target(name))
    return frame, target, _builtin_target(name)


def synthetic_frame(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series, NDArray[np.float64]]:
    """A binary problem with known P(y=1|x) = sigmoid(f(x)) over numeric and categorical inputs.

    ``f`` is smooth (a linear part, one interaction and one bump) plus an additive effect per
    category, so an MLP can learn it and the interval coverage measures estimation error rather
    than an unlearnable shape. No values are missing: the true probability is only known given
    the full ``x``.
    """
    if rows < 1:
        raise UsageError(f"--synthetic-rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    colour = rng.choice(np.array(["red", "green", "blue"]), size=rows, p=[0.5, 0.3, 0.2])
    size = rng.choice(np.array(["small", "medium", "large", "huge"]), size=rows)
    colour_effect = {"red": -0.6, "green": 0.3, "blue": 0.9}
    size_effect = {"small": -0.4, "medium": 0.0, "large": 0.3, "huge": 0.6}
    f = (
        1.2 * x[:, 0]
        - 0.8 * x[:, 1]
        + 0.6 * x[:, 2] * x[:, 3]
        + 0.8 * np.exp(-(x[:, 2] ** 2))
        - 0.4
        + np.array([colour_effect[c] for c in colour])
        + np.array([size_effect[s] for s in size])
    )
    p1 = 1.0 / (1.0 + np.exp(-f))
    y = (rng.random(rows) < p1).astype(np.int64)
    frame = pd.DataFrame(
        {"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "x4": x[:, 3], "colour": colour, "size": size}
    )
    target = pd.Series(np.where(y == 1, "yes", "no"), name=SYNTHETIC_TARGET)
    true_p = np.stack([1.0 - p1, p1], axis=1)  # classes sorted: "no", "yes"
    return frame, target, true_p


def synthetic_multiclass_frame(
    rows: int, seed: int
) -> tuple[pd.DataFrame, pd.Series, NDArray[np.float64]]:
    """A three-class problem with known P(y|x) = softmax(f(x)), a second family of true functions.

    Unlike :func:`synthetic_frame` the logits are periodic and kinked (a sine, an absolute value,
    a product) and one numeric column is pure noise, so interval checks do not hinge on one shape.
    """
    if rows < 1:
        raise UsageError(f"--synthetic-rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    shape = rng.choice(np.array(["circle", "square", "star"]), size=rows, p=[0.4, 0.4, 0.2])
    shape_effect = {"circle": 0.0, "square": 0.5, "star": -0.7}
    logits = np.zeros((rows, 3))
    logits[:, 1] = 1.5 * np.sin(1.5 * x[:, 0]) + 0.5 * x[:, 1]
    logits[:, 1] += np.array([shape_effect[v] for v in shape])
    logits[:, 2] = 0.8 * x[:, 0] * x[:, 1] - np.abs(x[:, 2]) + 0.7
    logits -= logits.max(axis=1, keepdims=True)
    true_p = np.exp(logits)
    true_p /= true_p.sum(axis=1, keepdims=True)
    y = (rng.random(rows)[:, None] > np.cumsum(true_p, axis=1)).sum(axis=1).clip(0, 2)
    frame = pd.DataFrame(
        {"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "noise": x[:, 3], "shape": shape}
    )
    target = pd.Series(np.array(["a", "b", "c"])[y], name=SYNTHETIC_TARGET)
    return frame, target, true_p


#: Groups of :func:`synthetic_groups_frame`: share of the rows and chance a label is flipped.
SYNTHETIC_GROUP_SHARES = {"A": 0.6, "B": 0.3, "C": 0.1}
SYNTHETIC_GROUP_LABEL_NOISE = {"A": 0.0, "B": 0.2, "C": 0.05}
#: The group column of :func:`synthetic_groups_frame`.
SYNTHETIC_GROUP_COLUMN = "group"


def synthetic_groups_frame(
    rows: int, seed: int
) -> tuple[pd.DataFrame, pd.Series, NDArray[np.float64]]:
    """A binary problem whose label noise differs by group: a known fairness gap.

    Clean P(y=1|x) = sigmoid(f(x)) depends on three numeric inputs only; the label of a row in
    group g is then flipped with probability e_g (SYNTHETIC_GROUP_LABEL_NOISE), so the truth is
    P(y=1|x, g) = (1 - e_g) p(x) + e_g (1 - p(x)). Every e_g is under 1/2, so the best label is
    the same in every group, and a model that never sees the group can be no more accurate on
    a noisy group than that group's truth allows: group B's accuracy is lower by construction.
    """
    if rows < 1:
        raise UsageError(f"--synthetic-rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    names = np.array(list(SYNTHETIC_GROUP_SHARES))
    group = rng.choice(names, size=rows, p=list(SYNTHETIC_GROUP_SHARES.values()))
    f = 2.0 * x[:, 0] - 1.5 * x[:, 1] + 0.5 * x[:, 2] ** 2 - 0.5
    clean = 1.0 / (1.0 + np.exp(-f))
    noise = np.array([SYNTHETIC_GROUP_LABEL_NOISE[g] for g in group])
    p1 = (1.0 - noise) * clean + noise * (1.0 - clean)
    y = (rng.random(rows) < p1).astype(np.int64)
    frame = pd.DataFrame(
        {"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], SYNTHETIC_GROUP_COLUMN: group.astype(object)}
    )
    target = pd.Series(np.where(y == 1, "yes", "no"), name=SYNTHETIC_TARGET)
    true_p = np.stack([1.0 - p1, p1], axis=1)  # classes sorted: "no", "yes"
    return frame, target, true_p


_GENERATORS = {
    "synthetic": synthetic_frame,
    "synthetic_multiclass": synthetic_multiclass_frame,
    "synthetic_groups": synthetic_groups_frame,
}


def write_synthetic(
    path: Path, frame: pd.DataFrame, target: pd.Series, true_p: NDArray[np.float64]
) -> None:
    """Write synthetic data as ``path`` (features + label) and the truth next to it.

    The true probabilities go to ``<stem>.true_proba.csv`` (same row order), not into the data
    file, so training on the written CSV cannot use them as features.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(**{SYNTHETIC_TARGET: target}).to_csv(path, index=False)
    # Columns follow the true probabilities' class order: the sorted labels.
    classes = sorted(set(target))
    truth = pd.DataFrame(
        {f"{TRUE_PROBABILITY_PREFIX}{c}": true_p[:, i] for i, c in enumerate(classes)}
    )
    truth.to_csv(path.with_name(f"{path.stem}.true_proba.csv"), index=False)


def _build(
    name: str,
    frame: pd.DataFrame,
    target_values: pd.Series,
    target: str,
    numeric_override: Sequence[str],
    categorical_override: Sequence[str],
    true_p: NDArray[np.float64] | None,
) -> Dataset:
    for col in (*numeric_override, *categorical_override):
        if col not in frame.columns:
            raise UsageError(
                f"column '{col}' given to --numeric/--categorical is not a feature column: "
                f"use one of {', '.join(map(str, frame.columns[:20]))}"
            )
    both = set(numeric_override) & set(categorical_override)
    if both:
        raise UsageError(
            f"column(s) {', '.join(sorted(both))} declared both numeric and "
            "categorical: pass each column to one flag only"
        )
    if frame.shape[1] == 0:
        raise UsageError("the data has no feature columns besides the target: add features")

    keep = target_values.notna().to_numpy()
    if not keep.all():
        log.warning("dropping %d rows whose target is missing", int((~keep).sum()))
        frame = frame.loc[keep].reset_index(drop=True)
        target_values = target_values[keep].reset_index(drop=True)
        if true_p is not None:
            true_p = true_p[keep]
    labels_text = _label_strings(target_values)
    classes = sorted(set(labels_text), key=_natural_key)
    if len(classes) < 2:
        only = classes[0] if classes else "nothing"
        raise UsageError(
            f"target '{target}' has one class ({only!r}) in {len(labels_text)} rows: a classifier "
            "needs at least two; check --target or the data"
        )
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[v] for v in labels_text], dtype=np.int64)

    numeric: list[str] = []
    categorical: list[str] = []
    columns: dict[str, pd.Series] = {}
    for col in frame.columns:
        series = frame[col]
        if col in numeric_override:
            kind = "numeric"
        elif col in categorical_override:
            kind = "categorical"
        else:
            is_num = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(
                series
            )
            kind = "numeric" if is_num else "categorical"
        if kind == "numeric":
            columns[col] = _as_numeric(series, col)
            numeric.append(col)
        else:
            columns[col] = _as_categorical(series)
            categorical.append(col)
    clean = pd.DataFrame(columns, columns=list(frame.columns))
    return Dataset(name, clean, labels, classes, target, numeric, categorical, true_p)


def _label_strings(values: pd.Series) -> list[str]:
    # A label column with missing rows is read as float (1.0, 0.0); integral floats become ints
    # again so the class labels are "1" and "0", as the file wrote them.
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        values = values.astype(np.int64)
    return [str(v) for v in values]


def _natural_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _as_numeric(series: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        return series.astype(np.float64)
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna()
    if bad.any():
        example = series[bad].iloc[0]
        raise UsageError(
            f"column '{name}' is numeric but holds text such as {example!r} "
            f"({int(bad.sum())} rows): fix the values or pass --categorical {name}"
        )
    values = converted.astype(np.float64)
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        raise UsageError(
            f"column '{name}' holds {int(infinite.sum())} infinite values: replace them with a "
            "number or leave the cell empty (missing values are imputed)"
        )
    return values


def _as_categorical(series: pd.Series) -> pd.Series:
    # Strings throughout; None (not NaN) marks a missing value so the graph input is unambiguous.
    values = [None if _is_missing(v) else _category_text(v) for v in series.tolist()]
    return pd.Series(values, index=series.index, dtype=object)


def _category_text(value: object) -> str:
    # An integer code column with gaps is read as float (2.0); its categories are "2", as written.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return bool(value is pd.NA or value is pd.NaT or value == "")
