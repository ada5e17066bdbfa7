"""Refuse JSON text that cannot be encoded as UTF-8 (lone UTF-16 surrogates such as ``"\\ud800"``).

orjson refuses a lone surrogate escape while parsing, but the standard-library parser that
:func:`service.codecs.columns.load_json` falls back to (for the ``NaN``/``Infinity`` literals)
accepts it and returns a ``str`` no UTF-8 encoder can write: ONNX Runtime then fails the whole
dynamic batch, and echoing the string in an answer or a log line fails too. So a payload parsed by
the fallback is checked once, here, and the first such string is refused with a 400 that names
where it sits (the instance and feature, the V2 element and input, or the field). The orjson path
needs no check, so the common request pays nothing (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import InvalidInput

#: What a client must send instead.
TEXT_EXPECTED = "UTF-8 text (no lone UTF-16 surrogate such as \\ud800)"

Path = tuple[str | int, ...]


def check_text(payload: Any) -> None:
    """Raise :class:`InvalidInput` if any string or key in ``payload`` is not valid Unicode text."""
    try:
        # One C-speed pass answers the common case; orjson refuses surrogates when writing too.
        orjson.dumps(payload)
        return
    except (orjson.JSONEncodeError, TypeError):
        pass  # a surrogate, or something orjson cannot write (a 65-bit int, deep nesting): look
    found = _first_bad_text(payload)
    if found is not None:
        raise _located_error(payload, *found)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _first_bad_text(payload: Any) -> tuple[Path, bool] | None:
    """Path of the first unencodable string, and whether it is an object key (depth-first)."""
    # An explicit stack: the stdlib parser accepts nesting deep enough to overflow recursion.
    stack: list[tuple[Path, Any]] = [((), payload)]
    while stack:
        path, value = stack.pop()
        if type(value) is str:
            if not _encodable(value):
                return path, False
        elif type(value) is dict:
            children = []
            for key, child in value.items():
                if not _encodable(key):
                    return (*path, key), True
                children.append(((*path, key), child))
            stack.extend(reversed(children))
        elif type(value) is list:
            stack.extend(((*path, i), child) for i, child in reversed(list(enumerate(value))))
    return None


def _located_error(payload: Any, path: Path, is_key: bool) -> InvalidInput:
    """The error for a bad string at ``path``: instance/element and feature when the shape says."""
    got = "a key" if is_key else "a string"
    got += " holding a lone UTF-16 surrogate"
    where = _instance_and_feature(payload, path, is_key)
    if where is not None:
        what, index, feature = where
        return InvalidInput(
            f"{what} {index}, feature {feature!r}: expected {TEXT_EXPECTED}, got {got}",
            instance=index,
            feature=feature,
            expected=TEXT_EXPECTED,
            got=got,
        )
    field = _field_name(path)
    return InvalidInput(
        f"{field}: expected {TEXT_EXPECTED}, got {got}",
        field=field,
        expected=TEXT_EXPECTED,
        got=got,
    )


def _instance_and_feature(payload: Any, path: Path, is_key: bool) -> tuple[str, int, str] | None:
    # Native: instances[i][feature]; V2: inputs[k].data[i] (or [i][j] nested, row-major).
    if is_key or len(path) < 3 or type(path[1]) is not int:
        return None
    if path[0] == "instances" and len(path) >= 3 and type(path[2]) is str:
        return "instance", path[1], path[2]
    if path[0] == "inputs" and len(path) >= 4 and path[2] == "data" and type(path[3]) is int:
        name = payload["inputs"][path[1]].get("name")
        if type(name) is str and _encodable(name):
            return "element", path[3], name
    return None


def _field_name(path: Path) -> str:
    """A readable, always-encodable location such as ``parameters['\\ud800']`` or ``id``."""
    parts: list[str] = []
    for step in path:
        if type(step) is int:
            parts.append(f"[{step}]")
        elif type(step) is str and step.isidentifier() and step.isascii():
            parts.append(f".{step}" if parts else step)
        else:
            parts.append(f"[{step!a}]")
    return "".join(parts) or "the request body"
