"""A native request body of an all-numeric model, parsed and type-checked in one C pass.

msgspec decodes the body straight into one struct per instance whose fields are the model's
features, each typed ``float | null``. That single pass does the work of orjson's parse plus the
per-value type scan of :mod:`service.codecs.records` (about 40% of the codec's CPU on a 64-row
request). It accepts only bodies the general path accepts, with the same values: an integer
becomes its float, ``null`` is missing, a duplicate key keeps its last value as orjson's parse
does. Everything else (a boolean or string value, a missing or unknown key, a ``NaN`` literal,
``"confidence_level": null``, malformed JSON) makes :func:`parse_numeric_body` return None, and
the general path parses the body again and names the problem: one definition of every rule.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

#: Most distinct feature lists whose decoders are kept (one per loaded model layout).
_CACHED_LAYOUTS = 64


@lru_cache(maxsize=_CACHED_LAYOUTS)
def _decoder(names: tuple[str, ...]) -> msgspec.json.Decoder[Any]:
    # Struct attributes must be identifiers and feature names need not be: each field is
    # f<i>, renamed to the feature's name on the wire.
    attributes = [f"f{i}" for i in range(len(names))]
    instance = msgspec.defstruct(
        "Instance",
        [(a, float | None) for a in attributes],  # no default: every feature is required
        rename=dict(zip(attributes, names, strict=True)),
        forbid_unknown_fields=True,
    )
    body = msgspec.defstruct(
        "Body",
        [
            ("instances", list[instance]),  # type: ignore[valid-type]
            # UNSET, not None: an explicit null is refused by the general path, so here too.
            ("confidence_level", float | msgspec.UnsetType, msgspec.UNSET),
        ],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(body)


def parse_numeric_body(
    body: bytes | memoryview, names: tuple[str, ...]
) -> tuple[NDArray[np.float64], float | None] | None:
    """The instances as float64 [N, F] (NaN for null) and the requested level (None: absent),
    or None when the body is not exactly that shape (the general path decides then)."""
    try:
        parsed = _decoder(names).decode(body)
    except msgspec.DecodeError:  # ValidationError included
        return None
    instances = parsed.instances
    if not instances:
        return None
    # Every value is a float or None here, which numpy turns into float64 and NaN.
    wide = np.array(list(map(msgspec.structs.astuple, instances)), dtype=np.float64)
    level = parsed.confidence_level
    return wide, None if level is msgspec.UNSET else float(level)
