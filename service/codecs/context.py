"""Per-instance context attributes: what fairness slices need and the model never sees.

A model trained with ``--sensitive``/``--exclude`` names context columns in its manifest
(``SensitiveColumn`` with source ``context``). A request may carry a value per instance for each
(native: a ``context`` object inside the instance; Open Inference Protocol, REST and gRPC: the
request parameter ``context``, a JSON text of an object mapping each name to a list of one value
per instance, because the protocol's parameters are scalars). Values are strings, numbers or
booleans, logged as text; anything else, an undeclared name or a text over
:data:`MAX_CONTEXT_CHARS` is refused with the instance and the name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.bundle import Manifest
from service.codecs.columns import describe, load_json
from service.errors import InvalidInput

#: Longest context value, in characters: a group name, never a document.
MAX_CONTEXT_CHARS = 256
#: The context a model declares none of.
NO_CONTEXT: tuple[str, ...] = ()
_SCALARS = (str, bool, int, float)


def context_names(manifest: Manifest) -> tuple[str, ...]:
    """The context attributes ``manifest`` declares, in its order (empty for most models)."""
    if not manifest.sensitive:
        return NO_CONTEXT
    return tuple(c.name for c in manifest.sensitive if c.source == "context")


def _text(value: Any, where: str, name: str, instance: int | None) -> str:
    if value is None:
        return ""
    kind = type(value)
    if kind not in _SCALARS or (kind is float and not math.isfinite(value)):
        raise InvalidInput(
            f"{where}: context {name!r} must be a string, a number or a boolean, "
            f"got {describe(value)}",
            field=f"context.{name}",
            expected="a string, a number or a boolean",
            **({} if instance is None else {"instance": instance}),
        )
    text = ("true" if value else "false") if kind is bool else str(value)
    if len(text) > MAX_CONTEXT_CHARS:
        raise InvalidInput(
            f"{where}: context {name!r} is {len(text)} characters long, over the limit of "
            f"{MAX_CONTEXT_CHARS}",
            field=f"context.{name}",
            expected=f"at most {MAX_CONTEXT_CHARS} characters",
            **({} if instance is None else {"instance": instance}),
        )
    return text


def _unknown(where: str, key: str, names: Sequence[str], instance: int | None) -> InvalidInput:
    declared = f"this model's are {list(names)}" if names else "this model declares none"
    return InvalidInput(
        f"{where}: unknown context attribute {key!r} ({declared})",
        field=f"context.{key}" if isinstance(key, str) else "context",
        expected=f"context attributes among {list(names)}",
        **({} if instance is None else {"instance": instance}),
    )


def empty_context(rows: int, names: Sequence[str]) -> dict[str, NDArray[np.object_]] | None:
    """Every declared attribute not given ("" per instance); None when none is declared."""
    if not names:
        return None
    return {name: np.full(rows, "", dtype=object) for name in names}


def instance_context(values: Sequence[Any], names: Sequence[str]) -> dict[str, NDArray[np.object_]]:
    """One column per declared name from each instance's ``context`` object (None: absent)."""
    n = len(values)
    columns = {name: np.full(n, "", dtype=object) for name in names}
    for i, given in enumerate(values):
        if given is None:
            continue
        where = f"instance {i}"
        if type(given) is not dict:
            raise InvalidInput(
                f"{where}: 'context' must be an object of attribute values, got {describe(given)}",
                instance=i,
                field="context",
                expected="an object",
            )
        for key, value in given.items():
            column = columns.get(key)
            if column is None:
                raise _unknown(where, key, names, i)
            column[i] = _text(value, where, key, i)
    return columns


def parameter_context(text: Any, rows: int, names: Sequence[str]) -> dict[str, NDArray[np.object_]]:
    """The ``context`` request parameter (a JSON text: name -> one value per instance)."""
    where = "parameters.context"
    if type(text) is not str:
        raise InvalidInput(
            f"{where} must be a JSON text of an object mapping names to lists, "
            f"got {describe(text)}",
            field=where,
            expected="a string",
        )
    payload = load_json(text.encode("utf-8", "surrogatepass"))
    if type(payload) is not dict:
        raise InvalidInput(
            f"{where} must hold a JSON object, got {describe(payload)}",
            field=where,
            expected="an object",
        )
    columns = {name: np.full(rows, "", dtype=object) for name in names}
    for key, values in payload.items():
        column = columns.get(key)
        if column is None:
            raise _unknown(where, key, names, None)
        if type(values) is not list or len(values) != rows:
            raise InvalidInput(
                f"{where}[{key!r}] must be a list of {rows} values (one per instance), "
                f"got {describe(values)}",
                field=f"context.{key}",
                expected=f"a list of {rows} values",
            )
        for i, value in enumerate(values):
            column[i] = _text(value, f"{where}[{key!r}][{i}]", key, i)
    return columns
