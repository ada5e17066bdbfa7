"""``--sensitive`` and ``--exclude``: check the columns, keep excluded ones out of the model, and
describe the sensitive ones for the manifest.

An excluded column is dropped from the model's inputs but stays in the table for slicing; a
sensitive column that is excluded has source ``context`` (requests carry it beside the features),
any other sensitive column is a model input, source ``feature``. A sensitive column must be
categorical or hold at most MAX_SENSITIVE_GROUPS distinct values, so that its groups are few and
named by its values (as text, service.fairness.group_text); a categorical column with more values
keeps its largest groups and counts the rest as ``other``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from service.bundle import MAX_SENSITIVE_GROUPS, SensitiveColumn
from service.bundle.manifest import REFERENCE_CONTEXT_PREFIX
from service.errors import UsageError
from service.fairness import group_text, training_groups
from training.data import Dataset

#: Distinct values listed in an error before "...".
_SHOWN = 20


def _available(columns: Sequence[str]) -> str:
    shown = ", ".join(columns[:_SHOWN])
    return shown + (", ..." if len(columns) > _SHOWN else "")


def check_columns(dataset: Dataset, sensitive: Sequence[str], exclude: Sequence[str]) -> None:
    """UsageError (one line) unless every named column exists, some input is left and every
    sensitive column is categorical or has few enough distinct values."""
    names = dataset.feature_names
    for flag, given in (("--sensitive", sensitive), ("--exclude", exclude)):
        for column in given:
            if column not in names:
                raise UsageError(
                    f"{flag}: column '{column}' is not a feature column of the data; "
                    f"columns available: {_available(names)}"
                )
    if set(names) <= set(exclude):
        raise UsageError(
            f"--exclude leaves no model input: the data's columns are {_available(names)}; "
            "exclude fewer"
        )
    for column in sensitive:
        if column in dataset.categorical:
            continue
        distinct = {t for t in map(group_text, dataset.frame[column].tolist()) if t is not None}
        if len(distinct) > MAX_SENSITIVE_GROUPS:
            raise UsageError(
                f"--sensitive: column '{column}' is numeric with {len(distinct)} distinct values; "
                f"a sensitive column must be categorical or have at most {MAX_SENSITIVE_GROUPS} "
                f"(pass --categorical {column} to slice by its most frequent values)"
            )


def model_dataset(dataset: Dataset, exclude: Sequence[str]) -> Dataset:
    """The dataset without the excluded columns: what the model is fitted on."""
    if not exclude:
        return dataset
    dropped = set(exclude)
    return replace(
        dataset,
        frame=dataset.frame.drop(columns=[c for c in dataset.feature_names if c in dropped]),
        numeric=[c for c in dataset.numeric if c not in dropped],
        categorical=[c for c in dataset.categorical if c not in dropped],
    )


def sensitive_columns(
    train_frame: pd.DataFrame, sensitive: Sequence[str], exclude: Sequence[str]
) -> list[SensitiveColumn]:
    """The manifest's sensitive columns; groups are the training split's, largest first."""
    out: list[SensitiveColumn] = []
    for column in sensitive:
        groups = training_groups(train_frame[column].tolist())
        if not groups:
            raise UsageError(
                f"--sensitive: column '{column}' has no values in the training split to name "
                "groups by: supply data for it or drop it from --sensitive"
            )
        source = "context" if column in exclude else "feature"
        out.append(SensitiveColumn(name=column, source=source, groups=groups))
    return out


def context_frame(frame: pd.DataFrame, columns: Sequence[SensitiveColumn]) -> pd.DataFrame:
    """The context columns' values as text (None = missing), named for reference.parquet."""
    return pd.DataFrame(
        {
            f"{REFERENCE_CONTEXT_PREFIX}{c.name}": pd.Series(
                [group_text(v) for v in frame[c.name].tolist()], dtype=object
            )
            for c in columns
            if c.source == "context"
        },
        index=frame.index,
    )


def split_names(text: str | None, flag: str) -> tuple[str, ...]:
    """Comma-separated column names, in order, each once; UsageError for an empty name."""
    if text is None:
        return ()
    names = [part.strip() for part in text.split(",")]
    if any(not n for n in names):
        raise UsageError(
            f"{flag} takes column names separated by commas, such as a,b; got {text!r}"
        )
    return tuple(dict.fromkeys(names))
