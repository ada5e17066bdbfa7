"""``probserve log``: show the newest rows of the prediction log, compact small segments."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import numpy as np
import orjson
import pyarrow as pa
import typer

from service.errors import UsageError
from service.predlog.errors import first_line
from service.predlog.urls import DEFAULT_LOG_URL, LOG_OFF, parse_log_url

app = typer.Typer(
    name="log",
    help="The prediction log: show the newest rows, compact small Parquet segments.",
    no_args_is_help=True,
    add_completion=False,
)

LogUrlOpt = Annotated[
    str,
    typer.Option(
        help="prediction log: a directory or s3:// URL (Parquet), postgresql://...",
        envvar="PROBSERVE_PREDICTION_LOG_URL",
    ),
]


def _url(text: str) -> str:
    try:
        location = parse_log_url(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if location is None:
        raise UsageError(LOG_OFF)
    return text


@app.command()
def show(
    model: Annotated[str, typer.Option(help="the model whose rows to show")],
    last: Annotated[int, typer.Option(min=1, max=100_000, help="how many rows")] = 5,
    prediction_log_url: LogUrlOpt = DEFAULT_LOG_URL,
) -> None:
    """Print the newest rows of a model, oldest first, one JSON object per line."""
    from service.predlog.window import read_parts

    url = _url(prediction_log_url)
    try:
        parts = read_parts(url, model, last=last)
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise UsageError(f"cannot read the prediction log: {first_line(exc)}") from exc
    rows: list[dict[str, Any]] = []
    for version, _, table in parts:
        # float32 features print as their shortest float32 text (0.1, not 0.10000000149011612).
        single = [f.name for f in table.schema if pa.types.is_float32(f.type)]
        for row in table.to_pylist():
            for name in single:
                if row[name] is not None:
                    row[name] = float(str(np.float32(row[name])))
            rows.append({"model": model, "version": version, **row})
    rows.sort(key=lambda r: (r["logged_at"], r["instance"]))
    if not rows:
        typer.echo(f"no rows of model {model!r} in the prediction log", err=True)
    for row in rows[-last:]:
        row["logged_at"] = dt.datetime.fromtimestamp(row["logged_at"], dt.UTC).isoformat()
        typer.echo(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY).decode())


@app.command()
def compact(
    prediction_log_url: LogUrlOpt = DEFAULT_LOG_URL,
    small_mib: Annotated[
        int, typer.Option(min=1, max=4096, help="merge segments smaller than this (MiB)")
    ] = 32,
) -> None:
    """Merge each partition's small Parquet segments into one file."""
    from service.predlog.compaction import compact as run

    url = _url(prediction_log_url)
    if parse_log_url(url) is not None and url.startswith(("postgresql://", "postgres://")):
        raise UsageError("compaction is for the Parquet log; PostgreSQL needs none")
    try:
        done = run(url, small_bytes=small_mib * 1024 * 1024)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"cannot compact the prediction log: {type(exc).__name__}") from exc
    typer.echo(
        f"compacted {done.partitions} partitions: {done.files_before} segments -> "
        f"{done.files_after}"
    )
