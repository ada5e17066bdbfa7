"""Which versions of a model serve: one parser for the setting, the registry and the CLI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VersionPolicy:
    """The ``latest`` N versions that verify, or all of them (``latest=None``); TF Serving's."""

    latest: int | None = 1

    @classmethod
    def parse(cls, spec: str | int | VersionPolicy) -> VersionPolicy:
        """``"latest"``, ``"latest:N"``, ``N`` or ``"all"``; ValueError says what is accepted."""
        if isinstance(spec, VersionPolicy):
            return spec
        text = str(spec).strip().lower()
        if text == "all":
            return cls(None)
        count = text.removeprefix("latest").removeprefix(":") or "1"
        if (text.startswith("latest") or text.isdigit()) and count.isdigit() and int(count) >= 1:
            return cls(int(count))
        raise ValueError(f"version policy {spec!r} is not 'all', 'latest' or 'latest:N' (N >= 1)")

    def __str__(self) -> str:
        return "all" if self.latest is None else f"latest:{self.latest}"
