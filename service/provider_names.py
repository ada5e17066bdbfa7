"""Execution-provider names as users write them: one parser for the settings and the runtime.

Kept free of onnxruntime so the settings check can use it: a name the runtime would refuse is
refused by the settings check too, with the same words (docs/architecture.md, "Runtime").
"""

from __future__ import annotations

from collections.abc import Sequence

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: Short names accepted on the command line and in settings.
PROVIDER_ALIASES = {"cpu": CPU, "cuda": CUDA}


def parse_provider_names(spec: str | Sequence[str]) -> tuple[list[str], bool]:
    """``"auto"``, ``"cpu"``, ``"cuda,cpu"`` or full ORT names -> (names, explicit).

    Raises ValueError naming the accepted forms for anything else.
    """
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [*spec]
    items = [s for s in items if s]
    if not items or items == ["auto"]:
        return [], False
    names: list[str] = []
    known = {*PROVIDER_ALIASES.values()}
    for item in items:
        name = PROVIDER_ALIASES.get(item.lower(), item)
        if name == "auto":
            raise ValueError("'auto' cannot be combined with other providers")
        if name not in known:
            raise ValueError(
                f"unknown execution provider {item!r}: use auto, cpu, cuda or a list like cuda,cpu"
            )
        if name not in names:
            names.append(name)
    return names, True
