"""Arrow IPC stream spool files: each flush is appended as one record batch and fsync'd.

A spool file holds one partition (its schema metadata names kind, model, version and date) and
is held under an exclusive ``flock`` while its process lives: another process takes a file only
when it can take that lock, i.e. when its writer has died. A crash mid-append leaves a torn last
message, which reading skips: SIGKILL loses at most the flush being written
(docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.ipc as ipc

logger = logging.getLogger(__name__)

SUFFIX = ".arrows"
#: The batch-id key of each record batch's custom metadata.
BATCH_ID = b"probserve.batch_id"


class SpoolFile:
    """One partition's open spool: append record batches of one schema, durably."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        """Create ``path`` (its directory too) and lock it; OSError when that fails.

        The file is made, locked and given its schema under a dot name and only then renamed:
        another process's sweep (which globs the real names) can never take it half made.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = schema
        self.rows = 0
        self.opened_at = time.monotonic()
        making = path.with_name(f".{path.name}")
        self._file: IO[bytes] = making.open("xb")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._writer = ipc.new_stream(self._file, schema)
            self._sync()
            os.rename(making, path)
        except BaseException:
            self._file.close()
            making.unlink(missing_ok=True)
            raise

    def append(self, batch: pa.RecordBatch, batch_id: str) -> None:
        """Append one batch and fsync before it counts as written; OSError on failure."""
        self._writer.write_batch(batch, custom_metadata={BATCH_ID: batch_id.encode()})
        self._sync()
        self.rows += batch.num_rows

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Finish the stream (end-of-stream marker) and release the lock; the file stays."""
        try:
            self._writer.close()
            self._sync()
        finally:
            self._file.close()

    def discard(self) -> None:
        """Close and remove the file (its rows reached their store)."""
        self.close()
        self.path.unlink(missing_ok=True)


def read_spool(path: Path) -> tuple[pa.Schema, list[tuple[pa.RecordBatch, str]]]:
    """A spool file's schema and its complete batches with their ids, in order.

    A torn last message (a crash mid-append) is skipped with a warning; ValueError when the
    file holds no readable schema at all.
    """
    batches: list[tuple[pa.RecordBatch, str]] = []
    if path.stat().st_size == 0:  # made by an older writer that died before its schema
        return pa.schema([]), batches
    # Memory-mapped: the batches point into the file's pages instead of copies on the heap,
    # so sealing a large spool costs page cache, not the server's anonymous memory.
    with pa.memory_map(str(path)) as handle:
        try:
            reader = ipc.open_stream(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ValueError(f"spool file {path.name} has no readable schema") from exc
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                logger.warning("prediction log spool %s: skipped a partly written batch", path.name)
                break
            batch_id = (meta or {}).get(BATCH_ID, b"").decode() if meta else ""
            batches.append((batch, batch_id))
        return reader.schema, batches


class Orphan:
    """Another (dead) process's spool file, locked by us while we take it over."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        """Hold ``handle``'s lock until ``done`` or ``release``."""
        self.path = path
        self._handle = handle

    def done(self) -> None:
        """Every row reached its store: remove the file."""
        self.path.unlink(missing_ok=True)
        self._handle.close()

    def release(self) -> None:
        """Taking it over failed: leave the file for the next attempt."""
        self._handle.close()


def orphans(directory: Path, prefix: str) -> Iterator[Orphan]:
    """Spool files named ``prefix*`` of processes that are gone (their lock is free), oldest
    first; files of live writers (ours included) are skipped."""
    if not directory.is_dir():
        return
    paths = sorted(directory.glob(f"{prefix}*{SUFFIX}"), key=_mtime)
    for path in paths:
        try:
            handle = path.open("rb")
        except OSError:
            continue
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its writer is alive
            handle.close()
            continue
        yield Orphan(path, handle)


def _mtime(path: Path) -> float:
    """Modification time; 0 for a file another process removed meanwhile."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
