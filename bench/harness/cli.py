"""`probserve bench`: the benchmark harness's command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from bench.harness import contenders
from bench.harness.results import markdown, table_lines
from bench.harness.runner import parse_cells, run_benchmark
from bench.harness.venvs import installed_version
from service.errors import UsageError


def parse_contenders(text: str) -> list[str]:
    """Comma-separated contender names ("all": every one); a clear error for an unknown one."""
    if text.strip() == "all":
        return list(contenders.ALL)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in contenders.ALL]
    if not names or unknown:
        raise UsageError(
            f"--contenders takes some of {', '.join(contenders.ALL)} (or all), got {text!r}"
        )
    return list(dict.fromkeys(names))


def parse_delays(text: str) -> list[int]:
    """Comma-separated batching delays in microseconds (0 to 1,000,000); empty: none."""
    delays = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if not part.isdigit() or int(part) > 1_000_000:
            raise UsageError(f"--delays-us takes microseconds from 0 to 1000000, got {part!r}")
        delays.append(int(part))
    return list(dict.fromkeys(delays))


def with_delay_variants(names: list[str], delays: list[int], providers: str) -> list[str]:
    """The contenders to start: ``names`` plus probserve once per swept delay; checks providers."""
    if providers not in ("cpu", "cuda"):
        raise UsageError(f"--providers takes cpu or cuda, got {providers!r}")
    if providers == "cuda":
        cpu_only = [n for n in names if n not in contenders.CUDA_CAPABLE]
        if cpu_only:
            raise UsageError(
                f"{', '.join(cpu_only)} run on CPU only in this benchmark: leave them out with "
                "--providers cuda"
            )
    return names + [contenders.delay_variant(d) for d in delays]


def bench(
    model_repository: Annotated[
        Path, typer.Option(envvar="PROBSERVE_MODEL_REPOSITORY", help="Model repository.")
    ] = Path("./models"),
    model: Annotated[str | None, typer.Option(help="Model to load-test (default: first).")] = None,
    contenders_: Annotated[
        str,
        typer.Option(
            "--contenders",
            help=f"Comma-separated, from {', '.join(contenders.ALL)}, or all "
            "(kserve and mlserver are installed into .bench/ on first use).",
        ),
    ] = ",".join(contenders.DEFAULT),
    cells: Annotated[
        str, typer.Option(help="ROWSxCONNECTIONS load shapes, comma-separated.")
    ] = "1x1,1x32,64x8",
    rounds: Annotated[int, typer.Option(min=1, help="Alternating rounds per cell.")] = 3,
    seconds: Annotated[float, typer.Option(min=1, help="Seconds per cell and round.")] = 3.0,
    providers: Annotated[
        str, typer.Option(help="Where every contender runs the graph: cpu or cuda.")
    ] = "cpu",
    delays_us: Annotated[
        str,
        typer.Option(
            help="Also run probserve with these batching delays (microseconds, comma-separated), "
            "e.g. 0,250,1000,4000; each shows as probserve@<delay>us."
        ),
    ] = "",
    venvs: Annotated[
        Path, typer.Option(help="Where the KServe and MLServer environments live.")
    ] = Path(".bench"),
    results: Annotated[Path | None, typer.Option(help="Write the Markdown results here.")] = None,
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON.")] = None,
) -> None:
    """Load-test probserve against the bare ASGI floor, naive FastAPI, KServe and MLServer."""
    names = with_delay_variants(parse_contenders(contenders_), parse_delays(delays_us), providers)
    report = run_benchmark(
        model_repository,
        model,
        names=names,
        cells=parse_cells(cells),
        rounds=rounds,
        seconds=seconds,
        venvs=venvs,
        providers=providers,
    )
    extra = {
        name: installed_version(venvs / name / "bin" / "python", name)
        for name in contenders.EXTERNAL
        if name in names or f"{name}-grpc" in names
    }
    typer.echo("\n".join(table_lines(report)))
    for name, count in report.unsettled.items():
        typer.echo(f"note: {name} was still busy when {count} of its cells started", err=True)
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(markdown(report, rounds=rounds, seconds=seconds, extra_versions=extra))
    if output is not None:
        options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS  # ceiling keys are row counts
        output.write_bytes(orjson.dumps(report.to_dict(), option=options))
    if any(r.errors for r in report.rows):
        raise UsageError("some requests failed: see the errors column")
