"""The ``probserve`` console script: one root command, subcommands contributed by each part.

``serve`` and ``bench`` belong to the service. ``train`` (training) and ``drift`` (monitoring) are
found through the ``probserve.commands`` entry-point group, so service never imports them.
Exit codes: 0 success, 2 bad usage or bad input (one-line message), 1 anything else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

import typer

from service.errors import UsageError


def _root() -> None:
    """Serve deep-ensemble models with calibrated probabilities, intervals and conformal sets."""


def _unavailable(name: str, missing: str) -> Callable[[], None]:
    def unavailable() -> None:
        raise UsageError(
            f"'probserve {name}' needs the Python package {missing}: "
            f"install it with pip install -e '.[{name}]'"
        )

    return unavailable


def build_app() -> typer.Typer:
    """A fresh root command with ``serve`` and every ``probserve.commands`` entry point.

    Entry points are plain command functions. One whose import fails (its extra is not
    installed) still shows, and says which package to install.
    """
    app = typer.Typer(
        name="probserve",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    # Imported here, not at module top, so importing the CLI never pays for the HTTP stack.
    from service.serve import serve

    app.command(name="serve")(serve)
    for ep in entry_points(group="probserve.commands"):
        try:
            command = ep.load()
        except ImportError as exc:
            missing = exc.name or str(exc)
            app.command(name=ep.name, help=f"(unavailable: needs {missing})")(
                _unavailable(ep.name, missing)
            )
            continue
        app.command(name=ep.name)(command)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn errors into one-line messages and exit codes (0, 1, 2)."""
    try:
        build_app()(args=argv, standalone_mode=False)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        return 1
    except typer.TyperException as exc:  # typer's own usage errors print themselves, exit 2
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:
        if os.environ.get("PROBSERVE_TRACEBACK") == "1":
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {exc} "
            "(set PROBSERVE_TRACEBACK=1 to see where)",
            err=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
