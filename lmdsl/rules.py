"""The static rules for fuzzy functions: one table shared by every checker.

Three checkers apply these rules: decoration time (`lmdsl/signature.py` and friends),
`lmdsl check`, and the mypy plugin (`lmdsl/plugins/mypy.py`). Each describes a type in
its own terms (a runtime annotation, a mypy type) as a `Shape`; the judgement of which
shapes lmdsl can write into a prompt and parse back, and every message, live here, so
all three say the same thing with the same error code. This module imports nothing
heavy: the mypy plugin loads it inside mypy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

DOCSTRING = "lmdsl-docstring"
SIGNATURE = "lmdsl-signature"
SERIALIZABLE = "lmdsl-serializable"
WIRING = "lmdsl-wiring"
TOP_LEVEL = "lmdsl-top-level"  # found by `lmdsl check` only: it runs the file's top-level code

CODES: dict[str, str] = {
    DOCSTRING: "A fuzzy function needs a docstring: it is the instruction the model follows",
    SIGNATURE: "Every parameter and the return type of a fuzzy function is annotated; no *args or **kwargs",
    SERIALIZABLE: "Types of fuzzy-function inputs and outputs can be written into a prompt and parsed back",
    WIRING: "Checks, metrics, examples and tools fit the fuzzy function or program they are attached to",
    TOP_LEVEL: "Importing a file calls no model and writes no file: such code runs under `if __name__ == ...`",
}

_GUARD_IT = 'guard it with `if __name__ == "__main__":`'

SUPPORTED_HELP = (
    "use str, int, float, bool, Literal, an Enum, list[T], dict[str, T], tuple, "
    "Optional or a union of these, a pydantic model or a TypedDict"
)

Kind = Literal[
    "scalar",
    "none",
    "literal",
    "enum",
    "model",
    "typeddict",
    "union",
    "list",
    "tuple",
    "dict",
    "bare",
    "unknown",
    "other",
]


@dataclass(frozen=True)
class Shape:
    """A checker-neutral description of a type.

    `args` are the element types (list: one; tuple: the items; dict: key then value;
    union: the members). `bad_literal` names a Literal value that is not a str, int,
    bool, None or Enum member. `fields` lists a TypedDict's fields lazily, since
    TypedDicts may refer to themselves; `identity` tells such a cycle apart.
    "unknown" is a type a checker could not see (an unresolved import): never an error.
    """

    kind: Kind
    name: str
    args: tuple[Shape, ...] = ()
    bad_literal: str | None = None
    fields: Callable[[], Iterable[tuple[str, Shape]]] | None = field(default=None, compare=False)
    identity: object = None
    key_is_str: bool = True


def unsupported_reason(shape: Shape, *, allow_none: bool = False) -> str | None:
    """None if the type qualifies, else a sentence saying which part does not and why."""
    return _reason(shape, allow_none, frozenset())


def _reason(shape: Shape, allow_none: bool, seen: frozenset[object]) -> str | None:
    kind = shape.kind
    if kind in ("scalar", "enum", "model", "unknown"):
        return None
    if kind == "none":
        return None if allow_none else "None is only allowed inside Optional[...] or a union"
    if kind == "literal":
        if shape.bad_literal is not None:
            return f"Literal values must be str, int, bool or Enum members, not {shape.bad_literal}"
        return None
    if kind == "typeddict":
        if shape.identity in seen or shape.fields is None:
            return None
        for name, field_shape in shape.fields():
            reason = _reason(field_shape, True, seen | {shape.identity})
            if reason:
                return f"field {name!r} of {shape.name}: {reason}"
        return None
    if kind == "union":
        return _first(shape.args, True, seen)
    if kind == "bare":
        return f"bare {shape.name} does not say what it holds: write {shape.name}[...] with the element type"
    if kind == "list":
        return _first(shape.args, False, seen)
    if kind == "tuple":
        return _first(shape.args, True, seen)
    if kind == "dict":
        key, value = shape.args
        if not shape.key_is_str:
            return f"dict keys must be str (JSON object keys are strings), not {key.name}"
        return _reason(value, True, seen)
    return f"{shape.name} cannot be written into a prompt and parsed back; {SUPPORTED_HELP}"


def _first(shapes: Iterable[Shape], allow_none: bool, seen: frozenset[object]) -> str | None:
    for shape in shapes:
        reason = _reason(shape, allow_none, seen)
        if reason:
            return reason
    return None


# -- messages: every checker words a finding the same way ---------------------------------------


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    import difflib  # only when there is a mistake to explain: rules loads with `import lmdsl`

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def missing_docstring(function: str) -> str:
    return (
        f"{function}: a fuzzy function needs a docstring; it is the instruction the model follows "
        f'(for example """Classify the sentiment of a movie review.""")'
    )


def unannotated_parameter(function: str, parameter: str) -> str:
    return f"{function}: parameter {parameter!r} has no type annotation; annotate it (for example '{parameter}: str')"


def unannotated_return(function: str) -> str:
    return (
        f"{function}: the return type is not annotated; annotate it with the type the model "
        f"must produce (for example '-> str' or '-> Literal[\"yes\", \"no\"]')"
    )


def star_parameter(function: str, star: str, parameter: str) -> str:
    return f"{function}: {star}{parameter} is not supported on a fuzzy function; name each input as its own annotated parameter"


def unserializable(function: str, what: str, type_name: str, reason: str) -> str:
    return f"{function}: {what} has type {type_name}, which lmdsl cannot use: {reason}"


def not_an_input(check: str, function: str, parameter: str, inputs: Sequence[str]) -> str:
    return (
        f"{check} of {function}: parameter {parameter!r} is not an input of {function}{did_you_mean(parameter, inputs)}; "
        f"its inputs are {', '.join(inputs) or 'none'}"
    )


def check_takes_output(check: str, function: str, parameter_type: str, output_type: str) -> str:
    return (
        f"{check} of {function}: its first parameter takes {parameter_type}, but {function} returns {output_type}; "
        f"annotate it with {output_type} (or a type that accepts it)"
    )


def metric_takes_output(metric: str, program: str, prediction_type: str, output_type: str) -> str:
    return (
        f"metric {metric}: its prediction parameter takes {prediction_type}, but {program} returns {output_type}; "
        f"annotate it with {output_type} (or a type that accepts it)"
    )


def example_lacks_input(number: int, program: str, missing: str, fields: Sequence[str]) -> str:
    return (
        f"trainset example {number} of {program} has no field {missing!r}, a parameter of {program}"
        f"{did_you_mean(missing, fields)}; its fields are {', '.join(fields) or 'none'}"
    )


def tool_unannotated(tool: str, parameter: str | None) -> str:
    if parameter is None:
        return f"react: tool {tool}: annotate its return type"
    return f"react: tool {tool}: parameter {parameter!r} has no type annotation; the model needs its type"


def top_level_model_call(function: str) -> str:
    return f"top-level code calls the model (through {function}): {_GUARD_IT}"


def top_level_file_change(action: str, path: str) -> str:
    return f"top-level code {action} {path}: {_GUARD_IT}"
