"""Which Python types a fuzzy function may take or return, judged on runtime annotations.

The rule itself lives in `lmdsl.rules` (shared with the mypy plugin and `lmdsl check`);
this module describes a runtime annotation as a `rules.Shape` for it.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from typing_extensions import is_typeddict

from lmdsl import rules

SCALARS: frozenset[Any] = frozenset({str, int, float, bool})
_LITERAL_VALUES = (str, int, bool, type(None), enum.Enum)
inspect_empty = inspect.Parameter.empty


def type_name(tp: Any) -> str:
    """A readable name for a type, as a user would write it."""
    if isinstance(tp, type) and not get_args(tp):
        return tp.__qualname__ if tp.__module__ not in ("builtins",) else tp.__name__
    return repr(tp).replace("typing.", "").replace("typing_extensions.", "")


def unsupported_reason(tp: Any, *, allow_none: bool = False) -> str | None:
    """None if `tp` qualifies, else a sentence saying which part does not and why."""
    return rules.unsupported_reason(shape_of(tp), allow_none=allow_none)


def shape_of(tp: Any) -> rules.Shape:
    """Describe a runtime annotation for the shared rules."""
    origin = get_origin(tp)
    args = get_args(tp)
    name = type_name(tp)
    if origin is Annotated:
        return shape_of(args[0])
    if tp is type(None) or tp is None:
        return rules.Shape("none", "None")
    if tp in SCALARS:
        return rules.Shape("scalar", name)
    if origin is Literal:
        bad = [a for a in args if not isinstance(a, _LITERAL_VALUES)]
        return rules.Shape("literal", name, bad_literal=repr(bad[0]) if bad else None)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return rules.Shape("enum", name)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return rules.Shape("model", name)
    if is_typeddict(tp):
        return rules.Shape("typeddict", tp.__qualname__, fields=lambda: _typeddict_fields(tp), identity=id(tp))
    if origin in (Union, types.UnionType):
        return rules.Shape("union", name, tuple(shape_of(a) for a in args))
    if tp in (list, dict, tuple):
        return rules.Shape("bare", tp.__name__)
    if origin is list:
        return rules.Shape("list", name, (shape_of(args[0]),))
    if origin is tuple:
        return rules.Shape("tuple", name, tuple(shape_of(a) for a in args if a is not Ellipsis))
    if origin is dict:
        key, value = args
        key_is_str = key is str or (get_origin(key) is Literal and all(isinstance(a, str) for a in get_args(key)))
        return rules.Shape("dict", name, (shape_of(key), shape_of(value)), key_is_str=key_is_str)
    return rules.Shape("other", name)


def _typeddict_fields(tp: Any) -> Iterator[tuple[str, rules.Shape]]:
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except NameError as error:
        yield "<annotations>", rules.Shape("other", f"an annotation that cannot be resolved ({error})")
        return
    for field, annotation in hints.items():
        yield field, shape_of(annotation)


def accepts(parameter: Any, value: Any) -> bool:
    """Whether a parameter annotated `parameter` takes values of type `value`.

    Conservative: False only when that is certain (plain classes, Literals, unions of
    them); anything it cannot judge (generics, strings, protocols) counts as accepted.
    """
    if parameter in (Any, object, inspect_empty) or value is Any:
        return True
    parameter = get_args(parameter)[0] if get_origin(parameter) is Annotated else parameter
    value = get_args(value)[0] if get_origin(value) is Annotated else value
    if get_origin(value) in (Union, types.UnionType):
        return all(accepts(parameter, member) for member in get_args(value))
    if get_origin(parameter) in (Union, types.UnionType):
        members = get_args(parameter)
        return any(accepts(member, value) for member in members) or not all(isinstance(m, type) for m in members)
    if get_origin(value) is Literal:
        return all(accepts(parameter, type(item)) for item in get_args(value))
    if value is None:
        value = type(None)
    if isinstance(parameter, type) and isinstance(value, type) and not get_args(parameter):
        if parameter is float and value is int:
            return True
        return issubclass(value, parameter)
    return True
