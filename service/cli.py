"""The ``probserve`` console script: one root command, subcommands contributed by each part.

``serve`` belongs to the service. ``train`` (training), ``drift`` (monitoring), ``log`` (the
prediction log) and ``bench`` (the benchmarks, present only in a checkout) are found through the
``probserve.commands`` entry-point group, so service never imports them.
Exit codes: 0 success, 2 bad usage or bad input (one-line message), 1 anything else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

import typer

from service.errors import UsageError


def _root() -> None:
    """Serve deep-ensemble models with calibrated probabilities, intervals and conformal sets."""


#: The extras a command needs, where it is more than the extra of its own name: reading logs and
#: references into frames is the ``data`` extra (pyproject.toml says why it stands apart).
_EXTRAS = {"train": "cpu,data,train", "drift": "data,drift"}


def _unavailable(name: str, missing: str) -> Callable[..., None]:
    extras = _EXTRAS.get(name, name)

    def unavailable(ctx: typer.Context) -> None:
        if name == "bench":  # the benchmarks ship in no package: they run from a checkout
            raise UsageError(
                "'probserve bench' runs from a source checkout of probserve (git clone, then "
                "pip install -e '.[cpu,dev]' or make bench): the benchmarks are not packaged"
            )
        raise UsageError(
            f"'probserve {name}' needs the Python package {missing}, which is not installed: "
            f"install the extras it needs (pip install 'probserve[{extras}]', or "
            f"pip install -e '.[{extras}]' in a checkout)"
        )

    return unavailable


#: Lets an unavailable command take any arguments, so its message shows instead of a usage error.
_ANY_ARGUMENTS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def build_app(argv: Sequence[str] | None = None) -> typer.Typer:
    """A fresh root command with ``serve`` and the ``probserve.commands`` entry points.

    Only the subcommand that ``argv`` names is imported (``probserve serve`` must not pay for
    torch, nor need the ``train`` extra); ``--help`` or an unknown name imports them all. An
    entry point is a command function or a Typer app with subcommands (``drift run``). One
    whose import fails still shows, and says which extra to install.
    """
    app = typer.Typer(
        name="probserve",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    parts = {ep.name: ep for ep in entry_points(group="probserve.commands")}
    wanted = _command_name(sys.argv[1:] if argv is None else argv)
    if wanted == "serve" or wanted not in parts:
        # Imported here, not at module top, so importing the CLI never pays for the HTTP stack.
        from service.serve import serve

        app.command(name="serve")(serve)
    if wanted in parts:
        selected = [parts[wanted]]
    else:
        selected = [] if wanted == "serve" else list(parts.values())
    for ep in selected:
        try:
            command = ep.load()
        except ImportError as exc:
            missing = exc.name or str(exc)
            app.command(
                name=ep.name,
                help=f"(unavailable: needs {missing})",
                context_settings=_ANY_ARGUMENTS,
            )(_unavailable(ep.name, missing))
            continue
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=ep.name)
        else:
            app.command(name=ep.name)(command)
    return app


def _command_name(args: Sequence[str]) -> str | None:
    """The subcommand ``args`` names (the first word that is not an option), or None."""
    for arg in args:
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn errors into one-line messages and exit codes (0, 1, 2)."""
    try:
        # Outside standalone mode click returns a command's exit code (typer.Exit(3)) instead
        # of exiting: pass it on.
        result = build_app(argv)(args=argv, standalone_mode=False)
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
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
