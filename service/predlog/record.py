"""What the request path hands the prediction log: records holding the request's own arrays.

The request path builds one PredictionRecord per served request from arrays it already holds
(no per-row work there); the writer thread turns a flush of them into one Arrow record batch per
model version (``service.predlog.batches``; docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


# Not frozen: a frozen dataclass sets each of its 16 fields through object.__setattr__, and
# one record is made per served request.
@dataclass(slots=True)
class PredictionRecord:
    """One served request: ``rows`` instances of one model version.

    ``features`` maps each feature to its [N, 1] column as the model received it: float32 with
    NaN for a missing number, or object strings with "" for a missing category. The [N, C]
    arrays follow ``classes``' order; ``labels`` are the predicted classes.
    """

    logged_at: float
    request_id: str
    model: str
    version: int
    protocol: str
    classes: Sequence[str]
    features: Mapping[str, ArrayLike]
    probabilities: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    prediction_sets: NDArray[np.bool_]
    labels: Sequence[str] | NDArray[np.object_]
    confidence_level: float
    latency_s: float
    #: Optionally, the numeric features as one float32 [F, N] block with their names (the
    #: ``features`` columns of those names hold the same values): one serialisation, not F.
    numeric: tuple[tuple[str, ...], NDArray[np.float32]] | None = None
    #: Per-instance context attributes, name -> object [N] of str ("" = not given), in the
    #: order of the model's sensitive context columns; None: the model declares none.
    context: Mapping[str, NDArray[np.object_]] | None = None

    @property
    def rows(self) -> int:
        """The number of instances (rows of the log) in this request."""
        return len(self.labels)


@dataclass(frozen=True, slots=True)
class FeedbackLabel:
    """A ground-truth label for the prediction (request_id, instance)."""

    request_id: str
    instance: int
    label: str


@dataclass(frozen=True, slots=True)
class FeedbackCounts:
    """What became of a feedback body's entries."""

    accepted: int = 0
    #: Always 0 when the labels are stored: a columnar log cannot look ids up on the request
    #: path, so the drift job reports matched and unmatched labels when it joins them.
    unknown: int = 0
    invalid: int = 0  # the label is not a class of the model


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """Well-formed labels of one feedback call, queued like predictions."""

    received_at: float
    model: str
    request_ids: Sequence[str]
    instances: Sequence[int]
    labels: Sequence[str] | NDArray[np.object_]

    @property
    def rows(self) -> int:
        """The number of labels."""
        return len(self.labels)
