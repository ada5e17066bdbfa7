"""Arrow IPC stream spool files: each flush is appended as one record batch and fsync'd.

A spool file holds one partition (its schema metadata names kind, model, version and date) and
is held under an exclusive ``flock`` while its process lives: another process takes a file only
when it can take that lock, i.e. when its writer has died. A crash mid-append leaves a torn last
message, which reading skips: SIGKILL loses at most the flush being written
(docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.ipc as ipc

logger = logging.getLogger(__name__)

SUFFIX = ".arrows"
#: The batch-id key of each record batch's custom metadata.
BATCH_ID = b"probserve.batch_id"


#: The most buffers one writev call takes (POSIX guarantees 16; Linux takes 1024).
_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16


class _Bytes(io.RawIOBase):
    """Where the Arrow stream writer puts a message, so the spool writes it to disk itself.

    It keeps the buffers Arrow hands it, not copies: Arrow passes either new bytes or a Buffer
    object that holds the batch's own memory alive, and the spool writes them with one writev.
    """

    def __init__(self) -> None:
        self._parts: list[Any] = []
        self._size = 0
        self._taken = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self._parts.append(data)
        self._size += size
        return size

    def tell(self) -> int:
        return self._size

    def take(self) -> tuple[list[Any], int]:
        """The buffers written since the last take, and their size in bytes."""
        parts, size = self._parts, self._size - self._taken
        self._parts, self._taken = [], self._size
        return parts, size


class SpoolFile:
    """One partition's open spool: append record batches of one schema, durably.

    Each message is built in memory and written with plain ``os.write`` calls, so a write that
    fails part-way (a full disk, a file-size limit) is cut back to the last whole message and
    the file stays a readable stream; the spool is then ``broken`` and takes no more batches.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        """Create ``path`` (its directory too) and lock it; OSError when that fails.

        The file is made and locked under a dot name and only then renamed: another process's
        sweep (which globs the real names) can never take it half made.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = schema
        self.rows = 0
        self.opened_at = time.monotonic()
        #: True once a write failed: the file holds every message before it, and no more come.
        self.broken = False
        self._end = 0  # bytes of whole messages on disk
        making = path.with_name(f".{path.name}")
        self._fd = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._sink = _Bytes()
            # The schema message goes out with the first batch (Arrow writes it lazily).
            self._writer = ipc.new_stream(self._sink, schema)
            os.rename(making, path)
        except BaseException:
            os.close(self._fd)
            making.unlink(missing_ok=True)
            raise

    def append(self, batch: pa.RecordBatch, batch_id: str) -> None:
        """Append one batch and fsync before it counts as written; OSError on failure."""
        if self.broken:
            raise OSError(f"spool {self.path.name} is closed after a failed write")
        self._writer.write_batch(batch, custom_metadata={BATCH_ID: batch_id.encode()})
        self._write(*self._sink.take())
        self.rows += batch.num_rows

    def _write(self, parts: list[Any], size: int) -> None:
        """Write ``parts`` (``size`` bytes) whole and fsync, or cut the file back to its last
        whole message."""
        try:
            # One writev, no joined copy; a short write (a full disk, a size limit) goes on
            # from where it stopped, so that a failure is the write that raises.
            written = os.writev(self._fd, parts) if 0 < len(parts) <= _IOV_MAX else 0
            if written < size:
                view = memoryview(b"".join(parts))[written:]
                while view:
                    done = os.write(self._fd, view)
                    view = view[done:]
            os.fsync(self._fd)
        except OSError:
            self.broken = True
            try:
                os.ftruncate(self._fd, self._end)
                os.lseek(self._fd, self._end, os.SEEK_SET)
            except OSError as exc:  # the file keeps a torn tail, which reading skips
                logger.error(
                    "prediction log spool %s: cannot cut a failed write: %s", self.path.name, exc
                )
            raise
        self._end += size

    def close(self) -> None:
        """Finish the stream (end-of-stream marker) and release the lock; the file stays."""
        try:
            if not self.broken:
                self._writer.close()
                self._write(*self._sink.take())
        except OSError as exc:  # readers take a stream without its marker as ended
            logger.warning("prediction log spool %s: no end marker: %s", self.path.name, exc)
        finally:
            os.close(self._fd)

    def discard(self) -> None:
        """Close and remove the file (its rows reached their store)."""
        self.close()
        self.path.unlink(missing_ok=True)


def read_spool(path: Path) -> tuple[pa.Schema, list[tuple[pa.RecordBatch, str]]]:
    """A spool file's schema and its complete batches with their ids, in order.

    A torn last message (a crash mid-append) is skipped with a warning; ValueError when the
    file holds no readable schema at all.
    """
    schema, batches = stream_spool(path)
    return schema, list(batches)


def stream_spool(path: Path) -> tuple[pa.Schema, Iterator[tuple[pa.RecordBatch, str]]]:
    """:func:`read_spool`'s schema now and its batches one at a time as they are read.

    Sealing a large spool then holds one row group of it, not the file: memory-mapping kept
    every page it touched in the server's RSS until the whole segment was written.
    """
    if path.stat().st_size == 0:  # made by an older writer that died before its schema
        return pa.schema([]), iter(())
    handle = pa.OSFile(str(path))
    try:
        reader = ipc.open_stream(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        handle.close()
        raise ValueError(f"spool file {path.name} has no readable schema") from exc
    return reader.schema, _batches(path, handle, reader)


def _batches(
    path: Path, handle: pa.NativeFile, reader: ipc.RecordBatchStreamReader
) -> Iterator[tuple[pa.RecordBatch, str]]:
    with handle:
        while True:
            try:
                batch, meta = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError):
                logger.warning("prediction log spool %s: skipped a partly written batch", path.name)
                return
            yield batch, (meta or {}).get(BATCH_ID, b"").decode() if meta else ""


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
