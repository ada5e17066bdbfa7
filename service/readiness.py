"""Whether the server is ready, from the repository index: strict ('all') or lenient ('any').

Triton has both: by default (``--strict-readiness=true``) the server is ready only when every
model is; without it, when the server is up at all. Here 'all' is the default: a replica whose
repository holds a model it cannot serve takes no traffic, so a broken bundle is noticed before
it is rolled out everywhere. 'any' keeps a replica in the load balancer while at least one model
serves; requests for the broken model get a 503 naming it, and /readyz still lists it
(docs/architecture.md, "Deployment").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from service.types import IndexEntry, ModelState

Readiness = Literal["all", "any"]

#: Index reasons of models that do not count: unloaded on purpose, or still being written.
_NOT_COUNTED = ("unloaded", "no versions on disk")


def is_ready(index: Iterable[IndexEntry], mode: Readiness) -> bool:
    """Ready under ``mode``: 'all' needs every counted model serving, 'any' one; none: not ready.

    A model counts unless it was unloaded through model control or has no version on disk yet.
    """
    serving: dict[str, bool] = {}
    for row in index:
        if row.state == ModelState.READY:
            serving[row.name] = True
        elif row.reason not in _NOT_COUNTED:
            serving.setdefault(row.name, False)
    if not serving:
        return False  # nothing to serve: a replica like this should get no traffic
    return all(serving.values()) if mode == "all" else any(serving.values())
