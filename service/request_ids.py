"""Request ids: the caller's ``X-Request-ID`` (or V2 ``id``) when usable, else a cheap new one."""

from __future__ import annotations

import itertools
import os

# A per-process random prefix plus a counter: unique across workers and restarts in practice,
# and far cheaper per request than uuid4().
_PREFIX = os.urandom(6).hex()
_counter = itertools.count(1)

#: Longest caller id echoed in a header or written to the logs.
MAX_LENGTH = 128


def new_request_id() -> str:
    """A fresh request id."""
    return f"{_PREFIX}-{next(_counter)}"


def usable_request_id(value: str | None) -> str | None:
    """The caller's id (``X-Request-ID`` or the V2 body's ``id``) if it may go into a header.

    One rule for both: 1 to :data:`MAX_LENGTH` characters of printable ASCII. CR/LF or other
    control characters would make the server drop the connection (an invalid header) or forge
    log lines, and a 70 k id makes a header stock clients refuse.
    """
    if value and len(value) <= MAX_LENGTH and value.isascii() and value.isprintable():
        return value
    return None


def request_id_from_headers(value: str | None) -> str:
    """The caller's id when :func:`usable_request_id` accepts it, else a new one."""
    return usable_request_id(value) or new_request_id()
