"""Request ids: the caller's ``X-Request-ID`` (or V2 ``id``) when usable, else a cheap new one."""

from __future__ import annotations

import itertools
import os

# A per-process random prefix plus a counter: unique across workers and restarts in practice,
# and far cheaper per request than uuid4().
_PREFIX = os.urandom(6).hex()
_counter = itertools.count(1)

MAX_LENGTH = 128


def new_request_id() -> str:
    """A fresh request id."""
    return f"{_PREFIX}-{next(_counter)}"


def request_id_from_headers(value: str | None) -> str:
    """The caller's id when it is short printable ASCII (it goes into logs), else a new one."""
    if value and len(value) <= MAX_LENGTH and value.isascii() and value.isprintable():
        return value
    return new_request_id()
