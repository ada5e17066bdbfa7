"""Column converters shared by both protocols: Python values or raw tensors -> graph inputs.

This is the hot path of every request, so each converter makes one type-checking pass over a
column (``type(v) is float`` is far cheaper than ``isinstance`` chains or a pydantic model per
row) and lets numpy do the arithmetic checks on the whole column at once.

Rules (docs/architecture.md, "The model bundle"):

- numeric features take JSON numbers; ``null`` is a missing value (NaN, imputed in the graph);
  booleans, strings and containers are refused; infinities, and numbers that overflow float32,
  are refused because the graph's standardisation would turn them into inf/NaN silently.
- categorical features take strings; ``null`` is missing (``""``, the graph's unknown bucket).
  JSON integers are accepted and turned into their decimal text (``3`` -> ``"3"``), since a
  category coded as an integer in the training data is stored as that text; floats are refused
  because their text (``"3.0"``) would silently miss every category. Booleans are accepted only
  for a feature whose categories are boolean texts (a True/False column the trainer read as
  bool and stored as ``str(value)``): ``true`` -> ``"True"``, so a row written by pandas'
  ``to_json`` is read as the trainer saw it; elsewhere their text would miss every category.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from service.bundle.columns import MISSING_CATEGORY
from service.codecs.text import check_text
from service.errors import InvalidInput
from service.uncertainty.levels import MAX_CONFIDENCE_LEVEL, MIN_CONFIDENCE_LEVEL

NUMERIC_EXPECTED = "a finite number or null"
CATEGORICAL_EXPECTED = "a string, an integer or null"
BOOLEAN_CATEGORICAL_EXPECTED = "a boolean, a string, an integer or null"

#: The text the trainer stores for a boolean value (``str(True)``, training/data.py).
BOOLEAN_TEXT = {True: "True", False: "False"}
_BOOLEAN_CATEGORIES = frozenset(BOOLEAN_TEXT.values())

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMERIC_TYPES = frozenset({float, int, type(None)})
#: Type sets for "every value is a ..." checks done in C: ``ONLY_STR.issuperset(map(type, xs))``.
ONLY_STR = frozenset({str})
ONLY_DICT = frozenset({dict})
ONLY_LIST = frozenset({list})
ONLY_BOOL = frozenset({bool})


def describe(value: Any) -> str:
    """Short, bounded description of a bad value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, float) and math.isinf(value):
        return "infinity"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return type(value).__name__


def bad_value(instance: int, feature: str, expected: str, value: Any, what: str) -> InvalidInput:
    """The error for one bad cell: names the instance, the feature, what was expected and got."""
    got = describe(value)
    return InvalidInput(
        f"{what} {instance}, feature {feature!r}: expected {expected}, got {got}",
        instance=instance,
        feature=feature,
        expected=expected,
        got=got,
    )


def numeric_rows(
    rows: Sequence[Sequence[Any]], features: list[str], what: str = "instance"
) -> NDArray[np.float32]:
    """Row-major JSON values ([N][F]) of numeric features -> float32 [F, N], NaN for ``None``.

    One numpy conversion for every numeric feature of a request: per-feature numpy calls cost
    more than the model itself on a wide batch-1 request. Each returned row is contiguous, so
    ``out[j][:, None]`` is a ready graph input.
    """
    return numeric_block(_float64_table(rows, lambda i, j: (i, features[j]), what), features, what)


def numeric_block(
    wide: NDArray[np.float64], features: list[str], what: str = "instance"
) -> NDArray[np.float32]:
    """float64 [N, F] of numeric features -> the checked float32 [F, N] block, rows contiguous."""
    return np.ascontiguousarray(_finite_float32(wide, features, what).T)


def numeric_columns(
    columns: Sequence[Sequence[Any]], features: list[str], what: str = "element"
) -> NDArray[np.float32]:
    """Feature-major JSON values ([F][N], one list per tensor) -> float32 [F, N]."""
    wide = _float64_table(columns, lambda j, i: (i, features[j]), what)
    # astype keeps the transposed view's layout, so the final .T is C-contiguous again.
    return _finite_float32(wide.T, features, what).T


def numeric_tensor(raw: NDArray[Any], feature: str, what: str = "element") -> NDArray[np.float32]:
    """A typed numeric tensor (FP32/FP64/INT...) -> float32 [N, 1]; NaN stays missing."""
    wide = raw.reshape(-1, 1).astype(np.float64, copy=False)
    return _finite_float32(wide, [feature], what)


def _float64_table(
    table: Sequence[Sequence[Any]], locate: Callable[[int, int], tuple[int, str]], what: str
) -> NDArray[np.float64]:
    """A 2-D list of JSON numbers/nulls -> float64; ``locate(outer, inner)`` names a bad cell."""
    # The set of value types, built in C, answers the common case without a Python loop; only
    # a table holding something else is walked to find (and name) the first bad value.
    # bool is a subclass of int but not `int` itself, so booleans are not in the allowed set.
    if not _NUMERIC_TYPES.issuperset(map(type, chain.from_iterable(table))):
        for a, line in enumerate(table):
            for b, v in enumerate(line):
                if type(v) not in _NUMERIC_TYPES:
                    raise bad_value(*locate(a, b), NUMERIC_EXPECTED, v, what)
    try:
        return np.array(table, dtype=np.float64).reshape(len(table), -1)
    except OverflowError:  # an integer too large even for float64
        for a, line in enumerate(table):
            for b, v in enumerate(line):
                if type(v) is int and abs(v) > _FLOAT32_MAX:
                    raise bad_value(*locate(a, b), NUMERIC_EXPECTED, v, what) from None
        raise


def _finite_float32(
    wide: NDArray[np.float64], features: list[str], what: str
) -> NDArray[np.float32]:
    """[N, F] float64 -> float32; infinities and float32 overflow are errors, NaN is missing."""
    # Checked before the cast, so the cast cannot overflow (no np.errstate, which is slow).
    bad = np.abs(wide) > _FLOAT32_MAX
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        value = float(wide[i, j])
        expected = NUMERIC_EXPECTED if math.isinf(value) else "a number within float32 range"
        raise bad_value(i, features[j], expected, value, what)
    return wide.astype(np.float32)


def is_boolean_feature(categories: Sequence[str]) -> bool:
    """Whether a categorical feature's training values were booleans ("True"/"False" only)."""
    return bool(categories) and _BOOLEAN_CATEGORIES.issuperset(categories)


def categorical_column(
    values: list[Any], feature: str, what: str = "instance", categories: Sequence[str] = ()
) -> NDArray[np.object_]:
    """JSON values of one categorical feature -> object [N, 1] of str; ``None`` becomes "".

    ``categories`` (the feature's) decides whether JSON booleans are accepted (module docstring).
    """
    column = np.empty((len(values), 1), dtype=object)
    if ONLY_STR.issuperset(map(type, values)):  # the common case: strings only, no loop
        column[:, 0] = values
        return column
    out: list[Any] | None = None
    for i, v in enumerate(values):
        t = type(v)
        if t is str:
            continue
        if v is None:
            text = MISSING_CATEGORY
        elif t is int:
            text = str(v)
        elif t is bool and is_boolean_feature(categories):
            text = BOOLEAN_TEXT[v]
        else:
            expected = (
                BOOLEAN_CATEGORICAL_EXPECTED
                if is_boolean_feature(categories)
                else CATEGORICAL_EXPECTED
            )
            raise bad_value(i, feature, expected, v, what)
        if out is None:
            out = list(values)  # copy only when a value must change
        out[i] = text
    column[:, 0] = values if out is None else out
    return column


def confidence_level(value: Any, field: str) -> float:
    """Validate a requested confidence level: a number in [MIN, MAX]_CONFIDENCE_LEVEL."""
    t = type(value)
    if (t is float or t is int) and MIN_CONFIDENCE_LEVEL <= value <= MAX_CONFIDENCE_LEVEL:
        return float(value)
    expected = f"a number in [{MIN_CONFIDENCE_LEVEL}, {MAX_CONFIDENCE_LEVEL}]"
    got = describe(value)
    raise InvalidInput(
        f"{field}: expected {expected}, got {got}", field=field, expected=expected, got=got
    )


def load_json(body: bytes | memoryview) -> Any:
    """Parse a JSON body; malformed JSON is a 400 that says where it broke.

    orjson first (fast). Only if it refuses, the standard library parser tries again, because it
    accepts the ``NaN`` and ``Infinity`` literals that Python's ``json.dumps`` (and so the stock
    ``tritonclient`` JSON path) writes for float NaN: a NaN is then a missing value, and an
    infinity is refused by the column checks with the instance and feature named. That parser
    also accepts lone UTF-16 surrogates (``"\\ud800"``), which orjson refuses, so what it returns
    is checked for text that cannot be UTF-8 (:func:`service.codecs.text.check_text`).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            payload = json.loads(bytes(body))
        except (ValueError, RecursionError):
            raise InvalidInput(f"malformed JSON: {exc}", expected="a JSON body") from None
        check_text(payload)
        return payload
