"""Sensitive-column values as bounded group names, and the size under which a group is too small.

The rule, one definition for the trainer's model card and the drift job:

- a value becomes text (:func:`group_text`): strings as they are, integral numbers without a
  fraction (``2.0`` and ``2`` are both ``"2"``, as the trainer reads an integer code column with
  gaps), other numbers and booleans as ``str`` writes them;
- a missing value (``None``, NaN, the empty string) is the group :data:`MISSING_GROUP`;
- text among the manifest's ``groups`` is its own group; any other text is :data:`OTHER_GROUP`.

So a column always slices into at most ``len(groups) + 2`` groups, whatever the data holds. The
two reserved names are buckets, never training groups: a raw value spelled ``other`` or
``missing`` falls into the bucket of that name.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from service.bundle.manifest import MAX_SENSITIVE_GROUPS, OTHER_GROUP

#: The group of a missing value (None, NaN or the empty string).
MISSING_GROUP = "missing"
#: Names that are buckets rather than values: never listed among a column's ``groups``.
RESERVED_GROUPS = (OTHER_GROUP, MISSING_GROUP)
#: Fewest rows for a group's figures to be reported; smaller groups are listed as too small.
MIN_GROUP_SIZE = 30


def group_text(value: object) -> str | None:
    """A raw value as group text; None for a missing value (see the module doc for the rule)."""
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else str(bool(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() else str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    text = str(value)
    return text if text != "" else None


def training_groups(values: Iterable[object], limit: int = MAX_SENSITIVE_GROUPS) -> list[str]:
    """The ``limit`` most frequent value texts, largest first (ties by text), buckets left out."""
    counts = Counter(t for t in map(group_text, values) if t is not None)
    for reserved in RESERVED_GROUPS:
        counts.pop(reserved, None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [text for text, _ in ranked[:limit]]


def group_labels(values: Iterable[object], groups: Sequence[str]) -> NDArray[np.object_]:
    """Each value's group name (object array of str): its text if in ``groups``, else a bucket."""
    # A value spelled like a bucket lands in that bucket, so it is never a group of its own.
    known = set(groups) | set(RESERVED_GROUPS)
    labels = []
    for value in values:
        text = group_text(value)
        if text is None:
            labels.append(MISSING_GROUP)
        else:
            labels.append(text if text in known else OTHER_GROUP)
    out = np.empty(len(labels), dtype=object)
    out[:] = labels
    return out


def too_small(rows: int) -> bool:
    """True when a group of ``rows`` rows is under :data:`MIN_GROUP_SIZE` (listed, not measured)."""
    return rows < MIN_GROUP_SIZE
