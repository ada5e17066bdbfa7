"""What unauthenticated answers may say about a bundle that did not load.

Load failures are worded for the operator (service/runtime): they name the bundle's absolute
path, digests and, for a manifest that does not parse, parser detail that quotes the file. The
server log keeps all of that. Answers anyone can read (/readyz, /v1/models, model metadata,
503s) carry the model, the version and the reason only (docs/architecture.md, "Deployment").
"""

from __future__ import annotations

import re

from service.errors import ProbserveError

# An absolute filesystem path: a "/" at the start or after a space, quote or bracket.
_PATH = re.compile(r"(?<![^\s'\"(\[=])/[^\s'\",;()\[\]]+")
_DIGEST = re.compile(r"\b[0-9a-fA-F]{64}\b")


def public_reason(text: str) -> str:
    """``text`` with absolute paths cut to their last part, sha256 digests hidden, one line."""
    first_line = text.splitlines()[0] if text else text
    without_paths = _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], first_line)
    return _DIGEST.sub("<sha256>", without_paths)


#: Errors whose message may carry a load failure worded for the operator (paths, digests).
_BUNDLE_ERRORS = frozenset({"model_not_ready", "model_load_error", "internal_error"})


def public_message(exc: ProbserveError) -> str:
    """The message a caller of any protocol sees for ``exc``: no paths or digests in it."""
    return public_reason(exc.message) if exc.error_type in _BUNDLE_ERRORS else exc.message
