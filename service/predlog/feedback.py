"""Ground-truth labels joined to logged predictions: accepted, unknown or invalid."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from service.predlog.record import FeedbackCounts, FeedbackLabel
from service.predlog.store import Store


def store_feedback(
    store: Store, model: str, labels: Sequence[FeedbackLabel], classes: Collection[str]
) -> FeedbackCounts:
    """Store the labels that name a class of ``model`` and a logged prediction of it.

    ``invalid``: the label is not one of ``classes``; ``unknown``: no prediction
    (model, request_id, instance) was logged. Raises StoreUnavailable on a database fault.
    """
    valid = [item for item in labels if item.label in classes]
    invalid = len(labels) - len(valid)
    keys = list(dict.fromkeys((item.request_id, item.instance) for item in valid))
    found = store.known(model, keys) if keys else set()
    accepted = [
        (item.request_id, item.instance, item.label)
        for item in valid
        if (item.request_id, item.instance) in found
    ]
    if accepted:
        store.save_feedback(model, accepted, time.time())
    return FeedbackCounts(
        accepted=len(accepted), unknown=len(valid) - len(accepted), invalid=invalid
    )
