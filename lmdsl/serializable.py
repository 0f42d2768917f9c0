"""The rule for which Python types a fuzzy function may take or return.

A type qualifies when lmdsl can write a value of it into a prompt and parse a
model's JSON back into an equal value. This one table is the source of truth for
decoration-time checks (and, later, for static checks).
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from typing_extensions import is_typeddict

SCALARS: frozenset[Any] = frozenset({str, int, float, bool})
SUPPORTED_HELP = (
    "use str, int, float, bool, Literal, an Enum, list[T], dict[str, T], tuple, "
    "Optional or a union of these, a pydantic model or a TypedDict"
)
_LITERAL_VALUES = (str, int, bool, type(None), enum.Enum)


def type_name(tp: Any) -> str:
    """A readable name for a type, as a user would write it."""
    if isinstance(tp, type) and not get_args(tp):
        return tp.__qualname__ if tp.__module__ not in ("builtins",) else tp.__name__
    return repr(tp).replace("typing.", "").replace("typing_extensions.", "")


def unsupported_reason(tp: Any, *, allow_none: bool = False) -> str | None:
    """None if `tp` qualifies, else a sentence saying which part does not and why."""
    return _check(tp, allow_none, frozenset())


def _check(tp: Any, allow_none: bool, seen: frozenset[int]) -> str | None:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Annotated:
        return _check(args[0], allow_none, seen)
    if tp is type(None) or tp is None:
        return None if allow_none else "None is only allowed inside Optional[...] or a union"
    if tp in SCALARS:
        return None
    if origin is Literal:
        bad = [a for a in args if not isinstance(a, _LITERAL_VALUES)]
        return f"Literal values must be str, int, bool or Enum members, not {bad[0]!r}" if bad else None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return None
    if is_typeddict(tp):
        return _check_typeddict(tp, seen)
    if origin in (Union, types.UnionType):
        for arg in args:
            reason = _check(arg, True, seen)
            if reason:
                return reason
        return None
    if tp in (list, dict, tuple):
        return f"bare {tp.__name__} does not say what it holds: write {tp.__name__}[...] with the element type"
    if origin is list:
        return _check(args[0], False, seen)
    if origin is tuple:
        items = [a for a in args if a is not Ellipsis]
        for arg in items:
            reason = _check(arg, True, seen)
            if reason:
                return reason
        return None
    if origin is dict:
        key, value = args
        if key is not str and not (get_origin(key) is Literal and all(isinstance(a, str) for a in get_args(key))):
            return f"dict keys must be str (JSON object keys are strings), not {type_name(key)}"
        return _check(value, True, seen)
    return f"{type_name(tp)} cannot be written into a prompt and parsed back; {SUPPORTED_HELP}"


def _check_typeddict(tp: Any, seen: frozenset[int]) -> str | None:
    if id(tp) in seen:
        return None
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except NameError as error:
        return f"TypedDict {tp.__qualname__} has an annotation that cannot be resolved: {error}"
    for field, annotation in hints.items():
        reason = _check(annotation, True, seen | {id(tp)})
        if reason:
            return f"field {field!r} of {tp.__qualname__}: {reason}"
    return None
