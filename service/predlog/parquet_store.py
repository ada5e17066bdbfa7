"""The default store: a hive-partitioned Parquet dataset fed through fsync'd Arrow IPC spools.

Each partition (model, version, UTC date; feedback: model, date) this process writes has one
open spool in the local spool directory; a spool is sealed into one Parquet segment when it
reaches ``segment_rows`` or ``segment_age_s``, when the process stops, and (for a process that
died) when the next process starts. A segment is written under a dot name and moved into place,
so readers never see half a file; its name comes from its spool's, so sealing a spool twice
rewrites the same segment instead of adding a copy (docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import contextlib
import logging
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from service.predlog.batches import Partition
from service.predlog.errors import PredictionLogError, StoreUnavailable
from service.predlog.layout import (
    FEATURE_PREFIX,
    LOWER_PREFIX,
    META_DATE,
    META_KIND,
    META_MODEL,
    META_VERSION,
    PROBABILITY_PREFIX,
    SET_PREFIX,
    UPPER_PREFIX,
    file_metadata,
)
from service.predlog.spool import SUFFIX, SpoolFile, orphans, stream_spool

logger = logging.getLogger(__name__)

#: Spool files of this store start with this; PostgreSQL's pending spools use another prefix.
SPOOL_PREFIX = "segment-"
#: Feedback lives beside the predictions under a name dataset discovery skips ("_" prefix).
FEEDBACK_DIR = "_feedback"
#: Snappy, and dictionaries for text columns only: on this log's float columns a dictionary
#: attempt and zstd cost 2.2 µs of writer CPU per row against 0.4 µs (measured, 64-row records
#: of a 30-feature model), for files about 10% smaller.
COMPRESSION = "snappy"


#: Rows per Parquet row group: each is gathered from the spool's small batches, read one at a
#: time, and written alone, so sealing holds one row group in memory, not the segment.
ROW_GROUP_ROWS = 65_536
#: The columns of a model's feature and class values (one per feature or class).
_VALUE_PREFIXES = (FEATURE_PREFIX, PROBABILITY_PREFIX, LOWER_PREFIX, UPPER_PREFIX, SET_PREFIX)


def write_segment(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: str, filesystem: pafs.FileSystem
) -> int:
    """Write one Parquet file of the log (segment or compaction); the rows written."""
    # Not request_id: its values are nearly all distinct, so a dictionary attempt only spills
    # to plain pages (0.1 µs of writer CPU per row for 1-row requests, same file size).
    text = [f.name for f in schema if pa.types.is_string(f.type) and f.name != "request_id"]
    # Min/max statistics where a reader prunes row groups (logged_at for a time window, the
    # other per-request columns), not on the per-feature and per-class values: those span
    # their whole range in any 65k-row group, and skipping them saves ~0.05 µs per row.
    pruned = [f.name for f in schema if not f.name.startswith(_VALUE_PREFIXES)]
    rows = 0
    with pq.ParquetWriter(
        path,
        schema,
        filesystem=filesystem,
        compression=COMPRESSION,
        use_dictionary=text,
        write_statistics=pruned,
    ) as writer:
        group: list[pa.RecordBatch] = []
        size = 0
        for batch in batches:
            group.append(batch)
            size += batch.num_rows
            if size >= ROW_GROUP_ROWS:
                # The batches as they are: combining them first copied a row group (~16 MiB)
                # for a file that comes out the same, page for page.
                writer.write_table(pa.Table.from_batches(group, schema=schema))
                rows += size
                group, size = [], 0
        if group:
            writer.write_table(pa.Table.from_batches(group, schema=schema))
            rows += size
    return rows


def open_filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and root path of a dataset URL or plain directory path."""
    if "://" not in url:
        root = Path(url).expanduser().absolute()
        return pafs.LocalFileSystem(), root.as_posix()
    try:
        filesystem, path = pafs.FileSystem.from_uri(url)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        scheme = url.split("://", 1)[0]
        raise PredictionLogError(
            f"the prediction-log URL scheme {scheme!r} names no filesystem pyarrow can open"
        ) from exc
    return filesystem, path.rstrip("/")


def partition_dir(root: str, partition: Partition) -> str:
    """The hive directory of a partition (values URI-escaped, as hive readers decode them)."""
    model = urllib.parse.quote(partition.model, safe="")
    if partition.kind == "feedback":
        return f"{root}/{FEEDBACK_DIR}/model={model}/date={partition.date}"
    return f"{root}/model={model}/version={partition.version}/date={partition.date}"


def partition_from_metadata(metadata: dict[bytes, bytes] | None) -> Partition:
    """The partition a spool's schema metadata names; ValueError when it names none."""
    meta = metadata or {}
    kind = meta.get(META_KIND, b"").decode()
    if kind not in ("predictions", "feedback") or META_MODEL not in meta or META_DATE not in meta:
        raise ValueError("the spool file names no partition")
    version = int(meta[META_VERSION]) if META_VERSION in meta else None
    return Partition(
        "feedback" if kind == "feedback" else "predictions",
        meta[META_MODEL].decode(),
        version,
        meta[META_DATE].decode(),
    )


class ParquetStore:
    """One process's writer into a Parquet dataset."""

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        token: str,
        *,
        segment_rows: int = 200_000,
        segment_age_s: float = 60.0,
    ) -> None:
        """Resolve the URL now (PredictionLogError); touch nothing until ``open``."""
        self.filesystem, self.root = open_filesystem(url)
        self._spool_dir = spool_dir
        self._token = token
        self._segment_rows = segment_rows
        self._segment_age_s = segment_age_s
        self._spools: dict[Partition, SpoolFile] = {}
        self._count = 0

    def open(self) -> None:
        """Create the root and seal the spools dead processes left behind."""
        try:
            self.filesystem.create_dir(self.root, recursive=True)
        except OSError as exc:
            # As for a database that is down: the server serves, batches wait in the local
            # spool, and the writer retries (a volume mounted late, a full disk emptied).
            raise StoreUnavailable(
                f"the prediction log's directory cannot be created: {type(exc).__name__}"
            ) from exc
        self.seal_orphans()

    def seal_orphans(self) -> int:
        """Turn spools of dead processes into segments; the rows sealed."""
        rows = 0
        for orphan in orphans(self._spool_dir, SPOOL_PREFIX):
            try:
                rows += self._seal_file(orphan.path)
            except (OSError, ValueError, pa.ArrowException) as exc:
                logger.error("prediction log: cannot seal spool %s: %s", orphan.path.name, exc)
                orphan.release()
                continue
            orphan.done()
        return rows

    def write(self, partition: Partition, batch: pa.RecordBatch, batch_id: str) -> None:
        """Append a batch to its partition's spool (fsync'd); seal it when full. OSError."""
        spool = self._spools.get(partition)
        if spool is None or spool.schema.remove_metadata() != batch.schema:
            if spool is not None:
                self._seal(partition)
            self._count += 1
            name = f"{SPOOL_PREFIX}{self._token}-{self._count:06d}{SUFFIX}"
            schema = batch.schema.with_metadata(
                file_metadata(partition.kind, partition.model, partition.version, partition.date)
            )
            spool = self._spools[partition] = SpoolFile(self._spool_dir / name, schema)
        try:
            spool.append(batch, batch_id)
        except OSError:
            if spool.broken:  # it holds every earlier batch whole: seal it, the next gets a new one
                self._seal(partition)
            raise
        if spool.rows >= self._segment_rows:
            self._seal(partition)

    def maintain(self) -> None:
        """Seal spools older than the segment age (readers see rows once sealed)."""
        now = time.monotonic()
        for partition, spool in list(self._spools.items()):
            if now - spool.opened_at >= self._segment_age_s:
                self._seal(partition)

    def seal_all(self) -> None:
        """Seal every open spool (at stop, and when a caller needs the rows readable now)."""
        for partition in list(self._spools):
            self._seal(partition)

    def _seal(self, partition: Partition) -> None:
        spool = self._spools.pop(partition)
        spool.close()
        try:
            self._seal_file(spool.path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            # The spool stays on disk: the next process that starts seals it.
            logger.error("prediction log: cannot seal spool %s: %s", spool.path.name, exc)
            return
        spool.path.unlink(missing_ok=True)

    def _seal_file(self, path: Path) -> int:
        """Write a spool file's rows as one Parquet segment; the rows written."""
        schema, batches = stream_spool(path)
        first = next(batches, None)
        if first is None:
            return 0
        partition = partition_from_metadata(schema.metadata)
        directory = partition_dir(self.root, partition)
        self.filesystem.create_dir(directory, recursive=True)
        name = path.name.removeprefix(SPOOL_PREFIX).removesuffix(SUFFIX)
        final = f"{directory}/part-{name}.parquet"
        temporary = f"{directory}/.part-{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            rows = write_segment(
                (b for b, _ in chain((first,), batches)), schema, temporary, self.filesystem
            )
            self.filesystem.move(temporary, final)
        except BaseException:
            # A half-written file is never left behind (readers skip dot names, disks do not).
            with contextlib.suppress(OSError, pa.ArrowException):
                self.filesystem.delete_file(temporary)
            raise
        pa.default_memory_pool().release_unused()  # a serving process keeps no segment's worth
        return rows

    def delete_before(self, cutoff: float) -> int:
        """Remove date partitions wholly older than ``cutoff``; the partitions removed."""
        from service.predlog.batches import utc_date

        keep_from = utc_date(cutoff)
        removed = 0
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        for info in self.filesystem.get_file_info(selector):
            name = info.path.rsplit("/", 1)[-1]
            is_date = info.type == pafs.FileType.Directory and name.startswith("date=")
            if is_date and name.removeprefix("date=") < keep_from:
                self.filesystem.delete_dir(info.path)
                removed += 1
        return removed

    def close(self) -> None:
        """Seal every open spool."""
        self.seal_all()
