"""A model's window of the log as Arrow tables, without pandas (``probserve log show`` uses it).

A Parquet dataset is read with pyarrow.dataset, filtered on the hive path (model, version,
date) and on ``logged_at`` inside the files, so only the window is decoded; PostgreSQL is read
with ``COPY ... TO STDOUT`` parsed by Arrow (docs/architecture.md, "Prediction log").
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from service.predlog.batches import utc_date
from service.predlog.errors import first_line
from service.predlog.layout import FEEDBACK_SCHEMA, Columns, check_schema_version
from service.predlog.parquet_store import FEEDBACK_DIR, open_filesystem
from service.predlog.urls import LOG_OFF, parse_log_url

logger = logging.getLogger(__name__)

#: (version, its column layout, its rows) of one model.
Part = tuple[int, Columns, pa.Table]


def read_parts(
    url: str,
    model: str,
    *,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    last: int | None = None,
    skip: tuple[str, ...] = (),
) -> list[Part]:
    """Each version's rows of ``model`` in [since, until) (of the newest ``last`` overall, give
    or take rows sharing the cutoff time), without the columns whose names start with one of
    ``skip``. ValueError for ``none``; Arrow/OS errors pass."""
    location = parse_log_url(url)
    if location is None:
        raise ValueError(LOG_OFF)
    if location.kind == "postgresql":
        assert location.dsn is not None
        from service.predlog.postgres_reader import postgres_parts

        parts = postgres_parts(location.dsn, model, version, since, until, last)
        return [(v, c, t.drop_columns(_skipped(t.schema, skip))) for v, c, t in parts]
    assert location.url is not None
    return list(_parquet_parts(location.url, model, version, since, until, last, skip))


def _skipped(schema: pa.Schema, skip: tuple[str, ...]) -> list[str]:
    """The names in ``schema`` that start with one of ``skip``."""
    return [name for name in schema.names if skip and name.startswith(skip)]


def read_feedback(url: str, model: str) -> pa.Table:
    """Every feedback label of ``model`` (FEEDBACK_SCHEMA), oldest and newest alike."""
    location = parse_log_url(url)
    if location is None:
        return FEEDBACK_SCHEMA.empty_table()
    if location.kind == "postgresql":
        assert location.dsn is not None
        from service.predlog.postgres_reader import postgres_feedback

        return postgres_feedback(location.dsn, model)
    assert location.url is not None
    return _parquet_feedback(location.url, model)


def _subdirs(filesystem: pafs.FileSystem, path: str, key: str) -> list[str]:
    """Values of the hive directories ``key=value`` directly under ``path``."""
    selector = pafs.FileSelector(path, allow_not_found=True)
    found = []
    for info in filesystem.get_file_info(selector):
        name = info.path.rsplit("/", 1)[-1]
        if info.type == pafs.FileType.Directory and name.startswith(f"{key}="):
            found.append(urllib.parse.unquote(name.removeprefix(f"{key}=")))
    return found


def _time_filter(since: float | None, until: float | None) -> ds.Expression | None:
    """Rows in [since, until): pruned by the date directories, then by row-group statistics."""
    clauses: list[ds.Expression] = []
    if since is not None:
        clauses += [ds.field("date") >= utc_date(since), ds.field("logged_at") >= since]
    if until is not None:
        clauses += [ds.field("date") <= utc_date(until), ds.field("logged_at") < until]
    if not clauses:
        return None
    expression = clauses[0]
    for clause in clauses[1:]:
        expression = expression & clause
    return expression


def _parquet_parts(
    url: str,
    model: str,
    version: int | None,
    since: float | None,
    until: float | None,
    last: int | None,
    skip: tuple[str, ...] = (),
) -> Iterator[Part]:
    filesystem, root = open_filesystem(url)
    if filesystem.get_file_info(root).type != pafs.FileType.Directory:
        raise ValueError("no prediction log at that URL (nothing logged yet?)")
    model_dir = f"{root}/model={urllib.parse.quote(model, safe='')}"
    versions = sorted(int(v) for v in _subdirs(filesystem, model_dir, "version") if v.isdigit())
    datasets = []
    for v in versions:
        if version is not None and v != version:
            continue
        datasets.append((v, _readable(filesystem, f"{model_dir}/version={v}", _DATE_PARTITIONS)))
    where = _time_filter(since, until)
    if last is not None:  # the newest ``last`` rows: find their oldest time from one column
        times = [d.to_table(columns=["logged_at"], filter=where)["logged_at"] for _, d in datasets]
        newest = pa.chunked_array([c for t in times for c in t.chunks], type=pa.float64())
        if len(newest) > last:
            cutoff = pc.select_k_unstable(newest, last, [("", "descending")])
            floor = pc.min(newest.take(cutoff)).as_py()
            extra = ds.field("logged_at") >= floor
            where = extra if where is None else where & extra
    for v, dataset in datasets:
        # One file read ahead at a time: the default read several at once, which raised the
        # peak memory of a 1M-row window by a third and was no faster here.
        # Skipped columns are never decoded (the drift job's window needs no interval bounds).
        skipped = {"date", *_skipped(dataset.schema, skip)}
        wanted = [name for name in dataset.schema.names if name not in skipped]
        table = dataset.to_table(columns=wanted, filter=where, fragment_readahead=1)
        yield v, Columns.from_schema(table.schema), table


def _parquet_feedback(url: str, model: str) -> pa.Table:
    filesystem, root = open_filesystem(url)
    directory = f"{root}/{FEEDBACK_DIR}/model={urllib.parse.quote(model, safe='')}"
    if filesystem.get_file_info(directory).type != pafs.FileType.Directory:
        return FEEDBACK_SCHEMA.empty_table()
    dataset = _readable(filesystem, directory, _DATE_PARTITIONS, schema=FEEDBACK_SCHEMA)
    return dataset.to_table(columns=FEEDBACK_SCHEMA.names)


_DATE_PARTITIONS = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


def _readable(
    filesystem: pafs.FileSystem,
    directory: str,
    partitioning: ds.Partitioning,
    schema: pa.Schema | None = None,
) -> ds.Dataset:
    """The Parquet files under ``directory`` that open, each checked for a newer layout.

    A file that does not open (cut short by a full disk or a copy, or not Parquet at all) is
    left out with a warning naming it, so one bad file costs its own rows, never the window.
    """
    found = ds.dataset(
        directory, filesystem=filesystem, format="parquet", partitioning=partitioning
    )
    good: list[str] = []
    for fragment in found.get_fragments():  # every file: a newer one may sit anywhere
        try:
            metadata = fragment.physical_schema.metadata
        except (pa.ArrowInvalid, OSError) as exc:
            logger.warning(
                "prediction log: skipped unreadable file %s: %s", fragment.path, first_line(exc)
            )
            continue
        check_schema_version(metadata)
        good.append(fragment.path)
    return ds.dataset(
        good,
        filesystem=filesystem,
        format="parquet",
        schema=schema,
        partitioning=partitioning,
        partition_base_dir=directory,
    )
