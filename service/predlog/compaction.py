"""Merge a Parquet log's small segments: one file per partition instead of one per seal.

Segments are immutable, so merging is safe beside live writers: the merged file is written
under a dot name, moved into place, and only then are the small files removed (a reader that
lists the directory in between may count those rows twice, never lose them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from service.predlog.parquet_store import open_filesystem, write_segment

#: Segments smaller than this are merged (bytes).
SMALL_SEGMENT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Compacted:
    """What one compaction did."""

    partitions: int  # partitions that had small segments merged
    files_before: int
    files_after: int


def compact(url: str, *, small_bytes: int = SMALL_SEGMENT_BYTES) -> Compacted:
    """Merge each partition's segments under ``small_bytes`` into one; OSError/Arrow errors."""
    filesystem, root = open_filesystem(url)
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    small: dict[str, list[str]] = {}
    for info in filesystem.get_file_info(selector):
        name = info.path.rsplit("/", 1)[-1]
        if info.type != pafs.FileType.File or not name.endswith(".parquet"):
            continue
        if name.startswith(".") or (info.size or 0) >= small_bytes:
            continue
        small.setdefault(info.path.rsplit("/", 1)[0], []).append(info.path)
    partitions = before = after = 0
    for directory, paths in sorted(small.items()):
        if len(paths) < 2:
            continue
        paths.sort()
        tables = [pq.read_table(p, filesystem=filesystem, partitioning=None) for p in paths]
        merged = pa.concat_tables(tables)
        name = f"part-compact-{uuid.uuid4().hex[:16]}"
        temporary = f"{directory}/.{name}.tmp"
        write_segment(merged.to_batches(), merged.schema, temporary, filesystem)
        filesystem.move(temporary, f"{directory}/{name}.parquet")
        for path in paths:
            filesystem.delete_file(path)
        partitions += 1
        before += len(paths)
        after += 1
    return Compacted(partitions, before, after)
