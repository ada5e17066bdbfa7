"""Rows that the database did not take wait here, on local disk, in order.

One JSON-lines file per process (``spool-{token}.jsonl``), appended and fsynced per batch, and
held under an exclusive ``flock`` for the process's lifetime: another process replays a file
only when it can take that lock, i.e. when its writer has died (docs/architecture.md,
"Telemetry seam").
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson

from service.predlog.schema import Row

logger = logging.getLogger(__name__)

PREFIX = "spool-"
SUFFIX = ".jsonl"


class Spool:
    """This process's spool file; created lazily on the first batch that needs it."""

    def __init__(self, directory: Path, token: str) -> None:
        """``token`` names the file; it is the process's row-key prefix."""
        self.directory = directory
        self.path = directory / f"{PREFIX}{token}{SUFFIX}"
        self._file: IO[bytes] | None = None
        self.rows = 0  # rows waiting in this file

    def append(self, rows: Sequence[Row]) -> None:
        """Append rows durably (fsync) before they count as spooled; OSError on failure."""
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows += len(rows)

    def read(self, chunk_rows: int) -> Iterator[list[Row]]:
        """The waiting rows in the order they were spooled, ``chunk_rows`` at a time."""
        if self._file is None:
            return iter(())
        return read_rows(self.path, chunk_rows)

    def clear(self) -> None:
        """Empty the file after every row in it reached the database."""
        if self._file is not None:
            self._file.truncate(0)
            self._file.seek(0)
            os.fsync(self._file.fileno())
        self.rows = 0

    def close(self) -> None:
        """Release the file; an empty one is removed, a non-empty one waits for a later process."""
        if self._file is None:
            return
        if self.rows == 0:
            self.path.unlink(missing_ok=True)
        self._file.close()
        self._file = None


def read_rows(path: Path, chunk_rows: int) -> Iterator[list[Row]]:
    """Rows of a spool file in order; a torn last line (a crash mid-write) is skipped."""
    chunk: list[Row] = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                logger.warning("prediction log spool: skipped a partly written last line")
                break
            chunk.append(tuple(orjson.loads(line)))
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


class Orphan:
    """Another (dead) process's spool file, locked by us while we replay it."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        """Hold ``handle``'s lock until ``done`` or ``release``."""
        self.path = path
        self._handle = handle

    def done(self) -> None:
        """Every row reached the database: remove the file."""
        self.path.unlink(missing_ok=True)
        self._handle.close()

    def release(self) -> None:
        """Replay failed: leave the file for the next attempt."""
        self._handle.close()


def orphans(directory: Path, own: Path) -> list[Orphan]:
    """Spool files of processes that are gone (their lock is free), oldest first."""
    if not directory.is_dir():
        return []
    found: list[Orphan] = []
    paths = sorted(directory.glob(f"{PREFIX}*{SUFFIX}"), key=_mtime)
    for path in paths:
        if path == own:
            continue
        try:
            handle = path.open("rb")
        except OSError:
            continue
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its writer is alive
            handle.close()
            continue
        found.append(Orphan(path, handle))
    return found


def _mtime(path: Path) -> float:
    """Modification time; 0 for a file another process removed meanwhile."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
