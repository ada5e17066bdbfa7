"""An explanation as plain JSON-able values: the shape the explain endpoint answers with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.explain.result import InstanceExplanation


def encode_explanation(
    explanation: InstanceExplanation, features: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """``{"label", "base_values", "attributions", "method", "additivity_error"}`` for one row.

    ``attributions`` is ``{feature: {class: {"value", "lower", "upper"}}}``; numbers are floats.
    """
    e = explanation
    error = e.additivity_error
    return {
        "label": e.label,
        "base_values": {c: float(e.base_values[j]) for j, c in enumerate(classes)},
        "attributions": {
            f: {
                c: {
                    "value": float(e.attributions[i, j]),
                    "lower": float(e.lower[i, j]),
                    "upper": float(e.upper[i, j]),
                }
                for j, c in enumerate(classes)
            }
            for i, f in enumerate(features)
        },
        "method": e.method,
        "additivity_error": {c: float(error[j]) for j, c in enumerate(classes)},
    }
