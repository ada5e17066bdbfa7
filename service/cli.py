"""The ``probserve`` console script: one root command, subcommands contributed by each part.

``serve`` and ``bench`` belong to the service. ``train`` (training) and ``drift`` (monitoring) are
found through the ``probserve.commands`` entry-point group, so service never imports them.
Exit codes: 0 success, 2 bad usage or bad input (one-line message), 1 anything else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import entry_points

import typer

from service.errors import UsageError

app = typer.Typer(
    name="probserve",
    help="Serve deep-ensemble models with calibrated probabilities, intervals and conformal sets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Serve deep-ensemble models with calibrated probabilities, intervals and conformal sets."""


def _add_service_commands() -> None:
    # Imported here, not at module top, so `probserve train` never pays for the HTTP stack.
    from service.serve import serve

    app.command(name="serve")(serve)


def _unavailable(name: str, missing: str) -> Callable[[], None]:
    def unavailable() -> None:
        raise UsageError(
            f"'probserve {name}' needs the Python package {missing}: "
            f"install it with pip install -e '.[{name}]'"
        )

    return unavailable


def _add_plugin_commands() -> None:
    for ep in entry_points(group="probserve.commands"):
        try:
            sub = ep.load()
        except ImportError as exc:
            missing = exc.name or str(exc)
            app.command(name=ep.name, help=f"(unavailable: needs {missing})")(
                _unavailable(ep.name, missing)
            )
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)
        else:
            app.command(name=ep.name)(sub)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn domain errors into one-line messages and exit codes."""
    _add_service_commands()
    _add_plugin_commands()
    try:
        app(args=argv, standalone_mode=False)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        return 1
    except Exception as exc:  # click's own usage errors carry their exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
