"""Shared by the deployment tests: paths, the pip-installed tools, settings fields, a Dockerfile
reader and compose variable interpolation."""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]

#: The Kubernetes version whose schemas the rendered manifests are validated against (the
#: kubectl client here is 1.32; kubernetes-validate ships schemas up to 1.37).
KUBERNETES_VERSION = "1.32.0"


def venv_tool(name: str) -> str:
    """A console script of a pinned dev dependency, beside the running interpreter.

    These come with `pip install -e '.[dev]'`, so a missing one fails (never skips).
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (it is in the dev extra)")
    return str(path)


def env_names(settings_class: type[BaseSettings]) -> set[str]:
    """The PROBSERVE_* environment variables a pydantic-settings class reads."""
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings_class.model_fields}


def service_env_names() -> set[str]:
    """What `probserve serve` reads: service.settings.Settings."""
    from service.settings import Settings

    return env_names(Settings)


def probserve_command(name: str, subcommand: str | None = None) -> Any:
    """The click command of ``probserve NAME [SUBCOMMAND]``, found as the root CLI finds it:
    ``serve`` in service.serve, the others through the ``probserve.commands`` entry points."""
    from importlib.metadata import entry_points

    if name == "serve":
        from service.serve import serve

        loaded: Any = serve
    else:
        (entry,) = [ep for ep in entry_points(group="probserve.commands") if ep.name == name]
        loaded = entry.load()
    if isinstance(loaded, typer.Typer):
        app = loaded
    else:
        app = typer.Typer()
        app.command()(loaded)
    command: Any = typer.main.get_command(app)
    if subcommand is not None:
        # Typer vendors its own click: a group is whatever has subcommands.
        subcommands = getattr(command, "commands", None)
        assert subcommands, f"probserve {name} has no subcommands"
        command = subcommands[subcommand]
    return command


def command_env_names(name: str, subcommand: str | None = None) -> set[str]:
    """The environment variables of the options of ``probserve NAME [SUBCOMMAND]``."""
    names: set[str] = set()
    for param in probserve_command(name, subcommand).params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


def command_flags(argv: list[str]) -> tuple[set[str], set[str]] | None:
    """(flags ``argv`` passes, flags its probserve command accepts), or None if not probserve."""
    words = [w for w in argv if not w.startswith("-")]
    if words[:1] != ["probserve"] or len(words) < 2:
        return None
    sub = words[2] if words[1] == "drift" and len(words) > 2 else None
    command = probserve_command(words[1], sub)
    accepted = {opt for param in command.params for opt in getattr(param, "opts", [])}
    given = {w.partition("=")[0] for w in argv if w.startswith("--")}
    return given, accepted


def drift_env_names(subcommand: str = "serve") -> set[str]:
    """What `probserve drift run|serve` reads: its options' variables and DriftSettings' fields
    (monitoring.drift.settings.DriftSettings fills from the environment what no flag gave)."""
    from monitoring.drift.settings import DriftSettings

    return env_names(DriftSettings) | command_env_names("drift", subcommand)


def train_env_names() -> set[str]:
    """What `probserve train` reads: the envvar of each of its options."""
    return command_env_names("train")


def settings_for(argv: list[str]) -> set[str] | None:
    """The environment variables of the probserve command that ``argv`` runs, or None."""
    words = [w for w in argv if not w.startswith("-")]
    if words[:1] != ["probserve"]:
        return None
    sub = words[1] if len(words) > 1 else None
    if sub == "serve":
        return service_env_names()
    if sub == "drift" and len(words) > 2:
        return drift_env_names(words[2])
    if sub == "train":
        return train_env_names()
    return None


# -- Dockerfiles ----------------------------------------------------------------------------------


@dataclass
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    value: str
    comments: list[str]  # the comment lines right above it


@dataclass
class Stage:
    """One FROM ... [AS name] stage."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions of one kind, in order."""
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    """A parsed Dockerfile: global ARGs and stages."""

    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        (found,) = [s for s in self.stages if s.name == name]
        return found

    def resolve(self, text: str) -> str:
        """``text`` with ${ARG} references to global ARG defaults substituted."""
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args.get(m.group(1), m.group(0)), text)


def read_dockerfile(path: Path) -> Dockerfile:
    """Parse ``path`` into global ARGs and stages (enough for these checks; not a full parser)."""
    instructions: list[Instruction] = []
    comments: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and line.startswith("#"):
            comments.append(line.lstrip("#").strip())
            continue
        if not line and not pending:
            comments = []
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        pending += (" " if pending else "") + line.rstrip("\\").strip()
        if line.endswith("\\"):
            continue
        keyword, _, value = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), comments))
        pending, comments = "", []
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages and instruction.keyword == "ARG":
            key, _, default = instruction.value.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append(instruction)
    return Dockerfile(args, stages)


def env_assignments(stage: Stage) -> dict[str, str]:
    """The ENV variables a stage sets (``ENV A=1 B=2`` form)."""
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.value):
            key, _, value = word.partition("=")
            values[key] = value
    return values


# -- docker-compose.yml ---------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")

#: What a user's .env must give the compose file (it refuses to start without them); the static
#: checks interpolate with these stand-in values.
REQUIRED_SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "GRAFANA_ADMIN_PASSWORD": "gf-secret"}


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` the environment does not give: compose refuses the file."""


def interpolate(value: str, environment: dict[str, str] | None = None) -> str:
    """Compose's substitution: ``${VAR}``, ``${VAR:-default}`` / ``${VAR-default}`` and
    ``${VAR:?error}`` / ``${VAR?error}`` (MissingVariable); ``$$`` is a literal ``$``."""
    env = environment or {}
    marker = "\0"

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        given = env.get(name)
        # With a colon, empty counts as unset; without one, only unset does.
        unset = given is None or (given == "" and bool(operator) and operator.startswith(":"))
        if not unset:
            return str(given)
        if operator and operator.endswith("?"):
            raise MissingVariable(f"{name}: {argument}")
        return argument if operator else ""

    text = value.replace("$$", marker)
    text = _VARIABLE.sub(substitute, text)
    return text.replace(marker, "$")


def compose_variables(text: str) -> set[str]:
    """Every ``${VAR...}`` the compose file reads from the environment or .env."""
    return {m.group(1) for m in _VARIABLE.finditer(text.replace("$$", ""))}


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as data (YAML anchors and merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def as_list(value: Any) -> list[str]:
    """A compose command/entrypoint (string or list) as a list of words."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment as a dict (list or mapping form), interpolated."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.partition("=") for item in env]
        env = {k: v for k, _, v in pairs}
    return {str(k): interpolate(str(v), REQUIRED_SECRETS) for k, v in env.items()}
