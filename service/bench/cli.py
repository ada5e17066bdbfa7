"""`probserve bench`: the benchmark harness's command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from service.bench.runner import format_report, run_benchmark
from service.errors import UsageError


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{flag} takes positive integers, got {text!r}")
    return values


def bench(
    model_repository: Annotated[
        Path, typer.Option(envvar="PROBSERVE_MODEL_REPOSITORY", help="Model repository.")
    ] = Path("./models"),
    model: Annotated[str | None, typer.Option(help="Model to load-test (default: first).")] = None,
    port: Annotated[int, typer.Option(help="Loopback port for the servers under test.")] = 8765,
    seconds: Annotated[float, typer.Option(help="Seconds per measured cell.")] = 5.0,
    connections: Annotated[str, typer.Option(help="Comma-separated concurrencies.")] = "1,8,32",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated rows per request.")] = "1,64",
    protocols: Annotated[str, typer.Option(help="Our protocols to drive: v1, v2.")] = "v1,v2",
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON.")] = None,
) -> None:
    """Load-test probserve against a naive FastAPI baseline and the in-process ONNX ceiling."""
    protos = [p.strip() for p in protocols.split(",") if p.strip()]
    if not protos or any(p not in ("v1", "v2") for p in protos):
        raise UsageError(f"--protocols takes v1 and/or v2, got {protocols!r}")
    report = run_benchmark(
        model_repository,
        model,
        port=port,
        seconds=seconds,
        connections=_ints(connections, "--connections"),
        batches=_ints(batch_sizes, "--batch-sizes"),
        protocols=protos,
    )
    typer.echo(format_report(report))
    if output is not None:
        output.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
