"""Testing LM programs: hypothesis strategies derived from signatures, prompt snapshots.

    from hypothesis import given, strategies as st
    from lmdsl.testing import drawn_model, inputs, outputs, prompt_text, replies

    @given(inputs(triage), st.data())
    def test_triage_never_crashes(values, data):
        with lmdsl.using(model=drawn_model(data, triage)):
            try:
                triage(**values)
            except (lmdsl.AssertionFailed, lmdsl.OutputError):
                pass  # allowed; a KeyError in the glue is not

- `inputs(fn_or_program)`: keyword inputs that pass the signature's validation.
- `outputs(fn)`: values of a fuzzy function's return type, constraints and validators honoured.
- `replies(fn)`: raw reply texts, valid ones and hostile ones, to fuzz the parse path.
- `drawn_model(data, program)`: a model that answers every fuzzy function with a drawn output.
- `prompt_text(fn, inputs)`: the exact messages a call sends, as text to snapshot.

hypothesis (and hypothesis-jsonschema) load on first use, not with this module: they are the
`testing` extra (`pip install lmdsl[testing]`); `import lmdsl` never loads them.
"""

from __future__ import annotations

import enum
import inspect
import json
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Required, TypeAlias, TypeVar, Union, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from typing_extensions import ReadOnly, is_typeddict

from lmdsl.calls.function import FuzzyFunction
from lmdsl.errors import InputError
from lmdsl.lm.types import Completion, Message, Request, Usage
from lmdsl.params import Params
from lmdsl.program import Program
from lmdsl.prompt import Prompt
from lmdsl.signature import InputField
from lmdsl.unicode import first_surrogate, printable

if TYPE_CHECKING:
    from hypothesis.strategies import DataObject, SearchStrategy

__all__ = [
    "DrawnModel",
    "UnattributedRequest",
    "drawn_model",
    "inputs",
    "outputs",
    "prompt_text",
    "render_messages",
    "replies",
]

R = TypeVar("R")
T = TypeVar("T")
Target: TypeAlias = "FuzzyFunction[..., Any] | Program[..., Any]"


class UnattributedRequest(AssertionError):
    """A `DrawnModel` got a request that none of the fuzzy functions it answers for sends.

    An `AssertionError` (a mistake in the test's set-up), not an `lmdsl.LMDSLError`, so a
    property that accepts `OutputError` or `AssertionFailed` never passes over it."""


class _Rejected:
    """The marker a validating `map` returns for a drawn value the signature rejects."""


_REJECTED = _Rejected()


# -- inputs -----------------------------------------------------------------------------------


def inputs(target: Target, /, **overrides: SearchStrategy[Any]) -> SearchStrategy[dict[str, Any]]:
    """Keyword inputs for a fuzzy function or a program, drawn from its annotations.

    Every drawn dict passes the function's own input check (`signature.validate_inputs`; for
    a program, the check `Program.invoke` makes), and every string in it can go into a prompt
    (no lone surrogates). Values are as validation returns them (a pydantic model as an
    instance, an enum as its member), so `fn(**drawn)` and `fn.invoke(drawn)` both work.
    Parameters with a default are sometimes left out, so the default is exercised too.

    Annotations built from str, int, float, bool, None, Literal, Enum, list, dict, tuple,
    unions and TypedDicts are drawn with `hypothesis.strategies.from_type` (so strategies
    registered with `st.register_type_strategy` apply); pydantic models and constrained
    (`Annotated`) types are drawn from their JSON schema, constraints included, then
    validated (values a validator rejects are filtered out).

    `overrides` give a strategy for some inputs by name, e.g. `inputs(triage,
    message=st.text(min_size=1))`; a program parameter whose annotation says nothing
    checkable (`Any`, no annotation) needs one unless it has a default.
    """
    from hypothesis import strategies as st

    fields, validate = _input_spec(target)
    names = {f.name for f in fields}
    unknown = sorted(set(overrides) - names - _unchecked_names(target))
    if unknown:
        raise TypeError(f"inputs(): {_label(target)} has no input {unknown[0]!r}; its inputs are {sorted(names)}")
    required: dict[str, SearchStrategy[Any]] = {}
    optional: dict[str, SearchStrategy[Any]] = {}
    for f in fields:
        strategy = overrides[f.name] if f.name in overrides else _input_values(f.annotation, f.adapter)
        (required if f.required else optional)[f.name] = strategy
    if isinstance(target, Program):
        _add_unchecked(target, overrides, required, optional)
    drawn = st.fixed_dictionaries(required, optional=optional)

    def check(values: dict[str, Any]) -> dict[str, Any] | _Rejected:
        try:
            checked = validate(values)
        except (InputError, ValueError, RecursionError):
            return _REJECTED
        return checked

    return _kept(drawn.map(check))


def _accepted(value: object) -> bool:
    return value is not _REJECTED


def _kept(strategy: SearchStrategy[T | _Rejected]) -> SearchStrategy[T]:
    """The draws a validating `map` accepted (few are rejected: the draws follow the types)."""
    return typing.cast("SearchStrategy[T]", strategy.filter(_accepted))


def _label(target: Target) -> str:
    return target.signature.qualname if isinstance(target, FuzzyFunction) else target.name


def _input_spec(target: Target) -> tuple[tuple[InputField, ...], Callable[[dict[str, Any]], dict[str, Any]]]:
    """The checkable input fields of a function or program, and the check its calls make."""
    if isinstance(target, FuzzyFunction):
        signature = target.signature
        fields = signature.inputs

        def validate_function(values: dict[str, Any]) -> dict[str, Any]:
            checked = signature.validate_inputs(values)
            drawn = {name: checked[name] for name in values}  # defaults left out stay out
            for name, value in drawn.items():
                _check_renders(signature.field(name), value)
            return drawn

        return fields, validate_function
    if isinstance(target, Program):
        program_fields = target._input_fields

        def validate_program(values: dict[str, Any]) -> dict[str, Any]:
            checked = dict(values)
            for f in program_fields:
                if f.name in checked:
                    checked[f.name] = f.validate(checked[f.name])
                    _check_renders(f, checked[f.name])
            return checked

        return program_fields, validate_program
    raise TypeError(f"expected a fuzzy function or a program, not {target!r}")


def _check_renders(f: InputField, value: Any) -> None:
    """`ValueError` (or `RecursionError`) unless the value can be written into a prompt as the
    call would write it: JSON-able, valid Unicode throughout."""
    if first_surrogate(f.render(value)) is not None:
        raise ValueError(f"{f.name} holds a lone surrogate")


def _unchecked_names(target: Target) -> set[str]:
    """A program's parameters its input check skips (`Any`, no annotation pydantic takes)."""
    if not isinstance(target, Program):
        return set()
    checked = {f.name for f in target._input_fields}
    return {
        name
        for name, p in target.python_signature.parameters.items()
        if name not in checked and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _add_unchecked(
    program: Program[..., Any],
    overrides: Mapping[str, SearchStrategy[Any]],
    required: dict[str, SearchStrategy[Any]],
    optional: dict[str, SearchStrategy[Any]],
) -> None:
    parameters = program.python_signature.parameters
    for name in sorted(_unchecked_names(program), key=list(parameters).index):
        has_default = parameters[name].default is not inspect.Parameter.empty
        if name in overrides:
            (optional if has_default else required)[name] = overrides[name]
        elif not has_default:
            raise TypeError(
                f"inputs(): cannot draw {program.name}'s parameter {name!r}: its annotation says nothing "
                f"to draw from; pass a strategy for it, e.g. inputs({program.name}, {name}=st.just(...))"
            )


def _input_values(annotation: Any, adapter: TypeAdapter[Any]) -> SearchStrategy[Any]:
    """Values for one input: `from_type` where it knows the whole type, else the JSON schema."""
    from hypothesis import strategies as st

    if _plain(annotation, frozenset()):
        return st.from_type(annotation)
    return _validated(_json_values(adapter, annotation), adapter, None)


def _plain(tp: Any, seen: frozenset[int]) -> bool:
    """Whether `from_type` draws exactly the values of `tp` (no constraint it would ignore):
    scalars, None, Literal, Enum, and list/dict/tuple/unions/TypedDicts of those."""
    if tp in (str, int, float, bool, type(None), None):
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return True
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return True
    if origin in (Required, NotRequired, ReadOnly):
        return _plain(get_args(tp)[0], seen)
    if is_typeddict(tp):
        if id(tp) in seen:
            return False  # recursive: left to the JSON schema, which recurses through `$ref`s
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except Exception:
            return False
        return all(_plain(h, seen | {id(tp)}) for h in hints.values())
    if origin in (list, dict, tuple, Union, types.UnionType):
        return all(_plain(a, seen) for a in get_args(tp) if a is not Ellipsis)
    return False


# -- outputs ----------------------------------------------------------------------------------


def outputs(fn: FuzzyFunction[..., R], *, context: Mapping[str, Any] | None = None) -> SearchStrategy[R]:
    """Values of a fuzzy function's return type, as a model's valid reply would give them.

    Drawn as JSON from the output's JSON schema (so field constraints such as `ge`,
    `max_length` or `pattern` shape the draw), then validated through the output's
    pydantic adapter as `OutputFormat.parse` does; values a validator rejects are filtered
    out. `context` is the validation context (the call's inputs) for validators that read
    `info.context`. Floats are finite and strings valid Unicode: what JSON can carry.
    """
    output = fn.signature.output
    return _validated(_json_values(output.adapter, output.annotation, output.schema), output.adapter, context)


def _validated(
    values: SearchStrategy[Any], adapter: TypeAdapter[Any], context: Mapping[str, Any] | None
) -> SearchStrategy[Any]:
    def validate(data: Any) -> Any:
        try:
            return adapter.validate_python(data, context=context)
        except (ValidationError, RecursionError):
            return _REJECTED

    return _kept(values.map(validate))


def _json_values(
    adapter: TypeAdapter[Any], annotation: Any, schema: Mapping[str, Any] | None = None
) -> SearchStrategy[Any]:
    """JSON data the type's JSON schema admits (falling back on `from_type` for a type with none)."""
    from hypothesis import strategies as st

    if schema is None:
        try:
            schema = adapter.json_schema()
        except Exception:  # a type pydantic validates but cannot describe
            return st.from_type(annotation)
    return _SchemaStrategies(schema).build(schema)


class _SchemaStrategies:
    """Strategies for the JSON schemas pydantic writes. Objects, arrays, combinators and `$ref`s
    (recursive ones included) are built here; leaves (strings with patterns and formats,
    numbers with bounds) go to `hypothesis_jsonschema.from_schema`, which draws them well but
    cannot take recursive references or 2020-12 `prefixItems`."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.defs: Mapping[str, Any] = root.get("$defs", {})
        self.refs: dict[str, SearchStrategy[Any]] = {}

    def build(self, schema: Any) -> SearchStrategy[Any]:
        from hypothesis import strategies as st

        if schema is False:
            return st.nothing()
        if not isinstance(schema, Mapping):
            return _any_json()
        if "$ref" in schema:
            return self._ref(str(schema["$ref"]).rsplit("/", 1)[-1])
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(list(schema["enum"]))
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                return st.one_of([self.build(s) for s in schema[combinator]])
        if "allOf" in schema:  # pydantic writes one-item allOfs; validation filters what the first misses
            return self.build(schema["allOf"][0])
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self.build({**schema, "type": k}) for k in kind])
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return self._array(schema)
        if kind in ("string", "integer", "number", "boolean", "null"):
            return _leaf(schema)
        return _any_json()

    def _ref(self, name: str) -> SearchStrategy[Any]:
        from hypothesis import strategies as st

        if name not in self.refs:
            target = self.defs.get(name, True)
            self.refs[name] = st.deferred(lambda: self.build(target))
        return self.refs[name]

    def _object(self, schema: Mapping[str, Any]) -> SearchStrategy[Any]:
        from hypothesis import strategies as st

        properties: Mapping[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fixed = {name: self.build(sub) for name, sub in properties.items() if name in required}
        optional = {name: self.build(sub) for name, sub in properties.items() if name not in required}
        named = st.fixed_dictionaries(fixed, optional=optional)
        extra = schema.get("additionalProperties")
        if not isinstance(extra, Mapping):
            return named
        key_schema = schema.get("propertyNames")
        keys = self.build({"type": "string", **key_schema}) if isinstance(key_schema, Mapping) else st.text()
        extras = st.dictionaries(keys.filter(lambda k: isinstance(k, str) and k not in properties), self.build(extra))
        return st.tuples(named, extras).map(lambda pair: {**pair[1], **pair[0]})

    def _array(self, schema: Mapping[str, Any]) -> SearchStrategy[Any]:
        from hypothesis import strategies as st

        min_items = int(schema.get("minItems", 0))
        max_items = schema.get("maxItems")
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        if prefix:
            head = st.tuples(*(self.build(s) for s in prefix)).map(list)
            room = None if max_items is None else int(max_items) - len(prefix)
            if not isinstance(items, Mapping) or room == 0:
                return head
            tail = st.lists(self.build(items), min_size=max(0, min_items - len(prefix)), max_size=room)
            return st.tuples(head, tail).map(lambda pair: pair[0] + pair[1])
        element = self.build(items) if isinstance(items, Mapping) else _any_json()
        size = None if max_items is None else int(max_items)
        if schema.get("uniqueItems"):
            return st.lists(element, min_size=min_items, max_size=size, unique_by=_json_key)
        return st.lists(element, min_size=min_items, max_size=size)


_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"})


def _leaf(schema: Mapping[str, Any]) -> SearchStrategy[Any]:
    from hypothesis_jsonschema import from_schema

    return from_schema({k: v for k, v in schema.items() if k not in _ANNOTATIONS}, codec="utf-8")


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _any_json() -> SearchStrategy[Any]:
    """Any JSON value: finite numbers, valid Unicode."""
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()
    )
    return st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8)


# -- replies ----------------------------------------------------------------------------------


def replies(fn: FuzzyFunction[..., Any], *, hostile: bool = True) -> SearchStrategy[str]:
    """Raw reply texts a model could send for `fn`: valid ones (a drawn output rendered as
    `fn.output_format.render` writes it, with a drawn `reasoning` for chain_of_thought
    functions), and unless `hostile=False` hostile ones too: truncated JSON, values of the
    wrong type (at the top or deep inside), missing and extra keys, duplicated keys,
    nesting thousands of levels deep, strings of up to a million characters, NaN, Infinity
    and out-of-range numbers, lone surrogates (raw and escaped), invalid escapes, empty
    text, prose around the JSON, JSON that is not an object.

    Every one must end, through `fn.output_format.parse`, in a value of the return type or
    `InvalidOutput` (and through a call, in a value or `lmdsl.OutputError`).
    """
    from hypothesis import strategies as st

    valid = _valid_objects(fn).map(_dump)
    if not hostile:
        return valid
    return st.one_of(valid, _hostile_replies(fn))


def _valid_objects(fn: FuzzyFunction[..., Any]) -> SearchStrategy[dict[str, Any]]:
    """The JSON objects of valid replies (parsed back from `render`, so exactly what it writes)."""
    from hypothesis import strategies as st

    fmt = fn.output_format
    if not fmt.reasoning:
        return outputs(fn).map(lambda value: json.loads(fmt.render(value)))
    return st.tuples(outputs(fn), st.text(max_size=200)).map(lambda pair: json.loads(fmt.render(*pair)))


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


_SURROGATES_RANGE = (0xD800, 0xDFFF)
_NUMBERS = ["NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "1" * 4400, "9" * 20, "0x10"]
_BAD_ESCAPES = ["\\x41", "\\u12", "\\u12G4", "\\q", "\\", "\\ud800", "\\udfff", "\\udc00\\ud800", "\\u0000", "\x01"]
_PROSE = [
    "Sure! Here is the answer:",
    "I cannot help with that.",
    "The answer is yes.",
    "null",
    "undefined",
    "```json",
]


def _hostile_replies(fn: FuzzyFunction[..., Any]) -> SearchStrategy[str]:
    from hypothesis import strategies as st

    objects = _valid_objects(fn)
    texts = objects.map(_dump)
    junk = _any_json()
    keys = st.sampled_from(_keys_of(fn)) | st.text(max_size=10)
    index = st.integers(min_value=0, max_value=10**6)
    surrogate = st.integers(*_SURROGATES_RANGE).map(chr)
    nesting = st.tuples(st.integers(min_value=1, max_value=5000), st.sampled_from(["[", '{"a":']), st.booleans())

    def cut(pair: tuple[str, int]) -> str:
        text, at = pair
        return text[: at % max(1, len(text))]

    def nested(args: tuple[str, tuple[int, str, bool]]) -> str:
        key, (depth, opening, closed) = args
        closing = ("]" if opening == "[" else "}") * depth if closed else ""
        return f'{{"{key}": {opening * depth}{"1" if opening != "[" else ""}{closing}}}'

    return st.one_of(
        st.tuples(texts, index).map(cut),  # truncated
        st.tuples(objects, index, junk).map(lambda t: _dump(_replace_node(t[0], t[1], t[2]))),  # a wrong value
        st.tuples(objects, index).map(lambda t: _dump(_drop_key(t[0], t[1]))),  # a missing key
        st.tuples(objects, st.dictionaries(st.text(max_size=10), junk, min_size=1)).map(
            lambda t: _dump({**t[1], **t[0]})  # extra keys
        ),
        # a duplicated key, the junk first or last (the last one wins)
        st.tuples(texts, keys, junk).map(lambda t: f'{{"{_escaped(t[1])}": {_dump(t[2])}, {t[0][1:]}'),
        st.tuples(texts, keys, junk).map(lambda t: f'{t[0][:-1]}, "{_escaped(t[1])}": {_dump(t[2])}}}'),
        st.tuples(keys.map(_escaped), nesting).map(nested),  # deep nesting
        st.tuples(keys, st.integers(min_value=10_000, max_value=1_000_000), st.sampled_from("xé\n\\"))
        # a huge string (a backslash doubles into an escape)
        .map(lambda t: _dump({t[0]: t[2] * t[1]})),
        # NaN, Infinity, out-of-range numbers
        st.tuples(keys.map(_escaped), st.sampled_from(_NUMBERS)).map(lambda t: f'{{"{t[0]}": {t[1]}}}'),
        st.sampled_from(_NUMBERS),
        st.tuples(texts, index, surrogate).map(lambda t: _insert(t[0], t[1], t[2])),  # a raw lone surrogate
        # invalid escapes (and escaped lone surrogates), alone or inside a valid reply's strings
        st.tuples(keys.map(_escaped), st.sampled_from(_BAD_ESCAPES)).map(lambda t: f'{{"{t[0]}": "a{t[1]}b"}}'),
        st.tuples(texts, index, st.sampled_from(_BAD_ESCAPES)).map(lambda t: _insert_in_string(*t)),
        st.sampled_from(["", " ", "\n", "\t \r\n", "\ufeff", "{", "}", "[]", "{}", '""']),  # (almost) nothing
        st.text(),  # prose, or anything
        st.tuples(st.sampled_from(_PROSE), texts).map(lambda t: f"{t[0]}\n{t[1]}"),
        texts.map(lambda text: f"```json\n{text}\n```"),  # the JSON in a code fence, with a BOM, trailing text
        texts.map(lambda text: f"\ufeff{text}"),
        st.tuples(texts, st.sampled_from([" and more", "}", "]", ",", "\n{}", " // done"])).map("".join),
        junk.map(_dump),  # JSON that is not an object, or not this object
        objects.map(lambda obj: _dump([obj])),
    )


def _keys_of(fn: FuzzyFunction[..., Any]) -> list[str]:
    """The keys of the function's reply object (and `reasoning`), for mutations that aim at them."""
    properties = fn.output_format.schema.get("properties", {})
    return [str(k) for k in properties] or ["value"]


def _escaped(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)[1:-1]


def _insert(text: str, at: int, piece: str) -> str:
    at %= len(text) + 1
    return text[:at] + piece + text[at:]


def _insert_in_string(text: str, at: int, piece: str) -> str:
    """`piece` just after an opening quote of the reply (inside a key or a string value)."""
    quotes = [i for i, c in enumerate(text) if c == '"']
    if not quotes:
        return _insert(text, at, piece)
    return _insert(text, quotes[at % len(quotes)] + 1, piece)


def _nodes(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_nodes(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_nodes(v) for v in value)
    return 1


def _replace_node(obj: dict[str, Any], at: int, junk: Any) -> Any:
    """`obj` with its `at`-th node (in preorder, modulo the count; 0 is the whole object) replaced by `junk`."""
    target = at % _nodes(obj)

    def walk(value: Any, counter: list[int]) -> Any:
        number = counter[0]
        counter[0] += 1
        if number == target:
            return junk
        if isinstance(value, dict):
            return {k: walk(v, counter) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, counter) for v in value]
        return value

    return walk(obj, [0])


def _drop_key(obj: dict[str, Any], at: int) -> dict[str, Any]:
    """`obj` without one of its keys (chosen by `at`), or an object one level down without one."""
    if not obj:
        return obj
    names = list(obj)
    name = names[at % len(names)]
    inner = obj[name]
    if isinstance(inner, dict) and inner and at % 2:
        return {**obj, name: _drop_key(inner, at // 2)}
    return {k: v for k, v in obj.items() if k != name}


# -- a drawn model ----------------------------------------------------------------------------


class DrawnModel:
    """A backend that answers every request of the fuzzy functions it knows with a reply drawn
    from hypothesis' `data` (see `drawn_model`). Its replies are kept out of the cache, and it
    calls no model (`live = False`), so a guard against live model calls lets it run.

    `replies` lists (function qualname, reply text) in the order they were drawn.
    """

    cacheable = False
    live = False

    def __init__(
        self,
        data: DataObject,
        functions: Sequence[FuzzyFunction[..., Any]],
        *,
        hostile: bool = False,
        name: str = "drawn",
    ) -> None:
        if not functions:
            raise ValueError("drawn_model(): no fuzzy functions to answer for")
        self._data = data
        self.functions = tuple(functions)
        self.hostile = hostile
        self._name = name
        self._lock = threading.Lock()
        self._strategies: dict[int, SearchStrategy[str]] = {}
        self.replies: list[tuple[str, str]] = []

    @property
    def name(self) -> str:
        return self._name

    def attribute(self, request: Request) -> FuzzyFunction[..., Any]:
        """The fuzzy function that sent `request`: the one whose prompt prefix (system message,
        demonstrations) starts the request and whose output schema it carries; else one whose
        system message and schema match (its demos changed meanwhile). `UnattributedRequest`
        when none does."""
        messages = request.messages
        schema = request.json_schema
        by_prefix = sorted(
            (
                (len(prefix), number, fn)
                for number, fn in enumerate(self.functions)
                if fn.output_format.schema_text == schema and (prefix := fn.prompt_prefix) == messages[: len(prefix)]
            ),
            key=lambda found: (-found[0], found[1]),
        )
        if by_prefix:
            return by_prefix[0][2]
        for fn in self.functions:
            if fn.output_format.schema_text == schema and fn.prompt_prefix[:1] == messages[:1]:
                return fn
        raise UnattributedRequest(_unattributed(request, self.functions))

    def complete(self, request: Request) -> Completion:
        function = self.attribute(request)
        strategy = self._strategies.get(id(function))
        if strategy is None:
            strategy = self._strategies[id(function)] = replies(function, hostile=self.hostile)
        with self._lock:  # a program's `map` calls from threads; hypothesis draws one at a time
            text = self._data.draw(strategy, label=f"reply of {function.__qualname__}")
            self.replies.append((function.__qualname__, text))
        return Completion(text=text, usage=Usage(0, max(1, len(text) // 4)))


def _unattributed(request: Request, functions: Sequence[FuzzyFunction[..., Any]]) -> str:
    system = request.messages[0].content if request.messages else ""
    first_line = printable(system.strip().splitlines()[0] if system.strip() else "(no system message)")
    known = ", ".join(fn.signature.qualname for fn in functions)
    return (
        f"the drawn model got a request that none of its fuzzy functions ({known}) sends "
        f"(system message {first_line[:80]!r}); pass the function that sends it too, e.g. "
        "drawn_model(data, [program, function]) (a function a program gets as an argument, or "
        "one a strategy such as react derives)"
    )


def drawn_model(
    data: DataObject,
    target: Target | Iterable[Target],
    *,
    hostile: bool = False,
) -> DrawnModel:
    """A model for `lmdsl.using(model=...)` that answers each fuzzy function of `target` (a
    program, a fuzzy function, or several) with `fn.output_format.render(value)` of a value
    drawn from `outputs(fn)`, through hypothesis' `data` (`st.data()`): a property over every
    output the model could give, shrunk to the smallest failing one. With `hostile=True` it
    also draws the hostile replies of `replies(fn)`, exercising retries and `OutputError`.

    A request is matched to its function by the prompt prefix and the output schema; one that
    matches none raises `UnattributedRequest`.
    """
    targets: Iterable[Target] = [target] if isinstance(target, (FuzzyFunction, Program)) else target
    functions: list[FuzzyFunction[..., Any]] = []
    for item in targets:
        if isinstance(item, Program):
            found = list(item.functions.values())
        elif isinstance(item, FuzzyFunction):
            found = [item]
        else:
            raise TypeError(f"drawn_model() takes programs and fuzzy functions, not {item!r}")
        functions.extend(fn for fn in found if fn not in functions)
    return DrawnModel(data, functions, hostile=hostile)


# -- prompt snapshots -------------------------------------------------------------------------


def prompt_text(
    fn: FuzzyFunction[..., Any], inputs: Mapping[str, Any] | None = None, *, params: Params | None = None
) -> str:
    """The exact messages `fn` sends for `inputs` under `params` (by default the parameters in
    force: its own, or a `with_params` overlay's), as text: each message under a
    `=== role ===` header. Deterministic, so `assert prompt_text(fn, {...}) == snapshot(...)`
    turns an edit of a docstring, a type or a demonstration into a reviewed diff. With
    `inputs=None`, only the prefix (instructions and demonstrations). Inputs are validated
    as a call validates them (`InputError` if they do not fit), defaults filled in.
    """
    prompt = Prompt(fn.signature, fn.output_format, fn.params if params is None else fn.check_params(params))
    if inputs is None:
        return render_messages(prompt.prefix)
    values = fn.signature.validate_inputs(inputs)
    return render_messages(prompt.request(values, temperature=0.0, max_tokens=None).messages)


def render_messages(messages: Iterable[Message]) -> str:
    """Messages as readable text: `=== role ===` then the content, one blank line between messages."""
    return "\n\n".join(f"=== {message.role} ===\n{message.content}" for message in messages)
