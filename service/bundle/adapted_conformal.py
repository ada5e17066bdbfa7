"""Conformal scores recalibrated on labelled traffic: a small file beside a bundle.

Split-conformal sets cover at their level only while traffic is exchangeable with the
calibration split. When feedback labels show it no longer is, the drift monitor (which reads the
labels) recalibrates on the newest labelled rows and writes their sorted LAC scores here; every
server worker and replica that polls the repository serves sets from them, at any requested level,
with the same ``ceil((n + 1) * level)`` rule as the static scores (docs/architecture.md,
"Monitoring"). No file, or an unreadable one, means the bundle's own calibration scores.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: The file's name inside ``models/<name>/<version>/``.
ADAPTED_CONFORMAL_FILE = "conformal-adapted.json"
#: A bound on what a server reads: 100k scores as JSON text are about 2.5 MB.
MAX_FILE_BYTES = 8 * 1024 * 1024


class AdaptedConformal(BaseModel):
    """Recalibrated conformal scores for one model version, with a revision that only grows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    model: str = Field(min_length=1)
    version: int = Field(ge=1)
    #: Bumped by every publication; answers and metrics name the revision they used.
    revision: int = Field(ge=1)
    #: "rolling": the LAC scores of the newest ``window_rows`` labelled predictions.
    method: Literal["rolling"] = "rolling"
    window_rows: int = Field(ge=1)
    #: Unix time of the publication.
    created_at: float
    #: LAC scores (1 - probability of the true class), sorted ascending.
    scores: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _scores_are_sorted_probabilities(self) -> AdaptedConformal:
        s = self.scores
        if len(s) != self.window_rows:
            raise ValueError(f"window_rows is {self.window_rows} but {len(s)} scores are given")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in s):
            raise ValueError("scores must be finite and within [0, 1]")
        if any(b < a for a, b in itertools.pairwise(s)):
            raise ValueError("scores must be sorted ascending")
        return self


class AdaptedConformalError(ValueError):
    """An adapted-conformal file that cannot be read or does not match its bundle."""


def read_adapted_conformal(bundle_dir: Path, model: str, version: int) -> AdaptedConformal | None:
    """The file beside ``bundle_dir``'s manifest; None when there is none.

    AdaptedConformalError (one line, no path) when it is unreadable, malformed, or for another
    model or version than the bundle it sits in.
    """
    path = bundle_dir / ADAPTED_CONFORMAL_FILE
    try:
        # O_NOFOLLOW: a bundle reads only its own files, never one a link points elsewhere.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AdaptedConformalError(
            "a symbolic link, not a file of the bundle"
            if path.is_symlink()
            else f"unreadable: {exc.strerror or exc}"
        ) from exc
    try:
        with os.fdopen(descriptor, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise AdaptedConformalError(f"unreadable: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise AdaptedConformalError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        adapted = AdaptedConformal.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise AdaptedConformalError(f"malformed ({where}: {first['msg']})") from exc
    if (adapted.model, adapted.version) != (model, version):
        raise AdaptedConformalError(
            f"written for {adapted.model} version {adapted.version}, "
            f"found beside {model} version {version}"
        )
    return adapted


def write_adapted_conformal(bundle_dir: Path, adapted: AdaptedConformal) -> None:
    """Replace the file atomically: a poller reads the old one or the new one, never half."""
    handle, temporary = tempfile.mkstemp(prefix=".conformal-", suffix=".json", dir=bundle_dir)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(adapted.model_dump_json())
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # readable by the server's user, like the bundle itself
        os.replace(temporary, bundle_dir / ADAPTED_CONFORMAL_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
