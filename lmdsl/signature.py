"""`Signature`: everything about a fuzzy function that its Python definition fixes.

Built once at decoration time (like FastAPI's dependency analysis) from
`inspect`, `typing.get_type_hints` and the docstring, so a call only fills in
values: input names and renderers, the output's adapter and JSON schema, and a
fingerprint that tells a compiled artifact whether it still fits.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError
from pydantic.errors import PydanticSchemaGenerationError
from pydantic.fields import FieldInfo
from typing_extensions import is_typeddict

from lmdsl import rules
from lmdsl.errors import InputError, SignatureError
from lmdsl.serializable import accepts, type_name, unsupported_reason
from lmdsl.unicode import printable, surrogate_problem, surrogates_in

_EMPTY = inspect.Parameter.empty
_PLAIN = frozenset({str, int, float, bool})
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return):\s*$", re.MULTILINE)
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True, slots=True)
class InputField:
    """One parameter: its name, type, description and how its value is written in a prompt."""

    name: str
    annotation: Any
    description: str | None
    adapter: TypeAdapter[Any]
    default: Any = _EMPTY

    @property
    def required(self) -> bool:
        return self.default is _EMPTY

    def render(self, value: Any) -> str:
        """Text as the model reads it: strings as they are, everything else as compact JSON."""
        if isinstance(value, str):
            return value
        return self.adapter.dump_json(value, warnings=False).decode()

    def validate(self, value: Any) -> Any:
        """Check a value against this field's type, coercing JSON-shaped data (from the CLI, a
        data file) as pydantic's lax mode does. A plain `str`/`int`/`float`/`bool` that already
        has its annotation's exact type skips pydantic: the call path stays cheap."""
        if type(value) is self.annotation and value.__class__ in _PLAIN:
            if value.__class__ is str and (problem := surrogate_problem(value)) is not None:
                raise _NotUnicode(problem)
            return value
        return self.adapter.validate_python(value)


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """The return type. `key` is the JSON key that holds the value, or None when the
    value is itself a JSON object (a pydantic model or a TypedDict) and so is sent flat."""

    annotation: Any
    description: str | None
    adapter: TypeAdapter[Any]
    schema: Mapping[str, Any]
    key: str | None


@dataclass(frozen=True)
class Signature:
    name: str
    qualname: str
    module: str
    instructions: str
    inputs: tuple[InputField, ...]
    output: OutputSpec
    _positional: tuple[str, ...] = field(repr=False)
    _keyword: frozenset[str] = field(repr=False)
    _defaults: tuple[tuple[str, Any], ...] = field(repr=False)

    @functools.cached_property
    def _mutable_inputs(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.inputs if not _immutable(f.annotation))

    def snapshot(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """The inputs with mutable values (lists, dicts, models) deep-copied, so a record keeps
        what the model saw even if the caller mutates them later. Free for scalar inputs."""
        mutable = self._mutable_inputs
        if not mutable:
            return inputs
        copied = dict(inputs)
        for name in mutable:
            if name in copied:
                try:
                    copied[name] = copy.deepcopy(copied[name])
                except RecursionError as error:
                    raise input_error(name, copied[name], error) from None
        return copied

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.inputs)

    @functools.cached_property
    def _names(self) -> frozenset[str]:
        """Every input's name, positional-only ones included: inputs by name (`map`, checks, data) use them all."""
        return frozenset(f.name for f in self.inputs)

    def field(self, name: str) -> InputField:
        for f in self.inputs:
            if f.name == name:
                return f
        raise KeyError(name)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map call arguments to parameter names, as Python would, without `inspect` on the call path."""
        if len(args) > len(self._positional):
            raise InputError(
                f"{self.qualname}() takes {len(self._positional)} positional argument(s) but {len(args)} were given"
            )
        values = dict(zip(self._positional, args))
        for name, value in kwargs.items():
            if name not in self._keyword:
                raise InputError(
                    f"{self.qualname}() got an unexpected keyword argument {printable(name)!r}", field=name
                )
            if name in values:
                raise InputError(f"{self.qualname}() got multiple values for argument {name!r}", field=name)
            values[name] = value
        if len(values) < len(self.inputs):
            for name, default in self._defaults:
                values.setdefault(name, default)
            missing = [f.name for f in self.inputs if f.name not in values]
            if missing:
                raise InputError(
                    f"{self.qualname}() missing required argument(s): {', '.join(map(repr, missing))}", field=missing[0]
                )
        return values

    def validate_inputs(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate inputs by name against their annotations (every call path comes through
        here: a direct call, `map`, `acall`, programs, the CLI); the error names the first
        field at fault. Text that is not valid Unicode, and values nested too deeply or in
        a cycle, are `InputError`s too."""
        if not isinstance(data, Mapping):
            raise InputError(f"{self.qualname} takes its inputs by name (a mapping), not {type(data).__name__}")
        unknown = [name for name in data if name not in self._names]
        if unknown:
            name = printable(str(unknown[0]))
            raise InputError(
                f"unknown input field {name!r}; {self.qualname} takes {', '.join(self.input_names)}", field=name
            )
        values: dict[str, Any] = {}
        for f in self.inputs:
            if f.name not in data:
                if f.required:
                    raise InputError(f"missing input field {f.name!r} ({type_name(f.annotation)})", field=f.name)
                values[f.name] = f.default
                continue
            value = data[f.name]
            try:
                values[f.name] = f.validate(value)
            except (ValueError, RecursionError) as error:  # a ValidationError, a lone surrogate, a cycle, depth
                raise input_error(f.name, value, error) from None
        return values

    def bind_check(self, check: Callable[..., Any], role: str) -> Callable[[Any, Mapping[str, Any]], Any]:
        """Bind a check or reward written as `(output, *, <some inputs by name>)` so it can be
        called with `(output, inputs)`. A parameter that is not an input, or a first
        parameter annotated with a type that does not take the output, is a `SignatureError`."""
        check_name = f"{role} {getattr(check, '__qualname__', repr(check))}"
        label = f"{check_name} of {self.qualname}"
        try:
            params = list(inspect.signature(check).parameters.values())
        except (TypeError, ValueError) as error:
            raise SignatureError(f"{label}: cannot read its signature ({error})", code=rules.WIRING) from None
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise SignatureError(f"{label}: its first parameter must take the output positionally", code=rules.WIRING)
        problems = [p for p in [self._takes_output(check, check_name, params[0].name)] if p]
        names: list[str] = []
        takes_all = False
        for param in params[1:]:
            if param.kind is param.VAR_KEYWORD:
                takes_all = True
            elif param.kind is param.VAR_POSITIONAL:
                problems.append(
                    SignatureError(
                        f"{label}: *{param.name} is not supported; name the inputs it needs", code=rules.WIRING
                    )
                )
            elif param.name in self._names:
                names.append(param.name)
            elif param.default is _EMPTY:
                problems.append(
                    SignatureError(
                        rules.not_an_input(check_name, self.qualname, param.name, self.input_names), code=rules.WIRING
                    )
                )
        if problems:
            raise problems[0].with_problems(problems)
        if takes_all:
            return lambda output, inputs: check(output, **inputs)
        chosen = tuple(names)
        return lambda output, inputs: check(output, **{name: inputs[name] for name in chosen})

    def _takes_output(self, check: Callable[..., Any], check_name: str, parameter: str) -> SignatureError | None:
        try:
            annotation = typing.get_type_hints(check).get(parameter, _EMPTY)
        except Exception:  # unresolvable annotations: the call itself will tell
            return None
        if accepts(annotation, self.output.annotation):
            return None
        return SignatureError(
            rules.check_takes_output(
                check_name, self.qualname, type_name(annotation), type_name(self.output.annotation)
            ),
            code=rules.WIRING,
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of everything the model sees of this function, to detect stale artifacts."""
        payload = {
            "name": self.name,
            "instructions": self.instructions,
            "inputs": [[f.name, f.description, f.adapter.json_schema()] for f in self.inputs],
            "output": [self.output.description, dict(self.output.schema)],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_signature(fn: Callable[..., Any], localns: Mapping[str, Any] | None = None) -> Signature:
    """Analyse `fn`; raise `SignatureError` naming the function and the parameter at fault.

    `localns` is the namespace the function was defined in, so that types local to
    a function body resolve under `from __future__ import annotations`.
    """
    qualname = getattr(fn, "__qualname__", repr(fn))
    problems: list[SignatureError] = []  # every rule broken, so `lmdsl check` lists them all
    doc = inspect.getdoc(fn)
    instructions, arg_docs, returns_doc = _split_docstring(doc or "")
    if not doc or not doc.strip():
        problems.append(SignatureError(rules.missing_docstring(qualname), code=rules.DOCSTRING))
    elif not instructions:
        problems.append(
            SignatureError(
                f"{qualname}: the docstring has no description of the task before its sections", code=rules.DOCSTRING
            )
        )
    try:
        hints = typing.get_type_hints(fn, localns=dict(localns) if localns else None, include_extras=True)
    except Exception as error:
        raise SignatureError(f"{qualname}: its annotations cannot be resolved: {error}").with_problems(
            problems
        ) from None

    python_signature = inspect.signature(fn)
    inputs: list[InputField] = []
    positional: list[str] = []
    keyword: set[str] = set()
    defaults: list[tuple[str, Any]] = []
    for param in python_signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            problems.append(SignatureError(rules.star_parameter(qualname, star, param.name), code=rules.SIGNATURE))
            continue
        if param.name not in hints:
            problems.append(SignatureError(rules.unannotated_parameter(qualname, param.name), code=rules.SIGNATURE))
            continue
        annotation, description = _unwrap(hints[param.name])
        problem = _unsupported(qualname, f"parameter {param.name!r}", hints[param.name], allow_none=True)
        if problem:
            problems.append(problem)
            continue
        if param.kind is not param.KEYWORD_ONLY:
            positional.append(param.name)
        if param.kind is not param.POSITIONAL_ONLY:
            keyword.add(param.name)
        if param.default is not _EMPTY:
            defaults.append((param.name, param.default))
        inputs.append(
            InputField(
                name=param.name,
                annotation=annotation,
                description=description or arg_docs.get(param.name),
                adapter=_adapter(qualname, f"parameter {param.name!r}", annotation),
                default=param.default,
            )
        )

    if "return" not in hints:
        problems.append(SignatureError(rules.unannotated_return(qualname), code=rules.SIGNATURE))
    else:
        problem = _unsupported(qualname, "the return type", hints["return"], allow_none=False)
        if problem:
            problems.append(problem)
    if problems:
        raise problems[0].with_problems(problems)
    out_type, out_description = _unwrap(hints["return"])
    adapter = _adapter(qualname, "the return type", out_type)
    schema = _schema(qualname, adapter)
    flat = (isinstance(out_type, type) and issubclass(out_type, BaseModel)) or is_typeddict(out_type)
    return Signature(
        name=fn.__name__,
        qualname=qualname,
        module=fn.__module__,
        instructions=instructions,
        inputs=tuple(inputs),
        output=OutputSpec(
            annotation=out_type,
            description=out_description or returns_doc,
            adapter=adapter,
            schema=schema,
            key=None if flat else fn.__name__,
        ),
        _positional=tuple(positional),
        _keyword=frozenset(keyword),
        _defaults=tuple(defaults),
    )


def synthetic_function(
    name: str, doc: str, params: Sequence[tuple[str, Any]], returns: Any, *, module: str = __name__
) -> Callable[..., Any]:
    """A body-less function with the given keyword parameters, types and docstring: how a
    strategy derives a fuzzy function of its own (a tool-using step, a code writer)."""

    def derived(**kwargs: Any) -> Any:
        raise NotImplementedError(f"{name} is implemented by a language model")

    derived.__name__ = derived.__qualname__ = name
    derived.__doc__ = doc
    derived.__module__ = module
    derived.__annotations__ = {**dict(params), "return": returns}
    derived.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a) for n, a in params],
        return_annotation=returns,
    )
    return derived


class _NotUnicode(ValueError):
    """A string input holds a lone surrogate (the message says where)."""


def input_error(name: str, value: Any, error: BaseException) -> InputError:
    """The `InputError` for a value of input `name` that failed validation, copying or rendering
    into a prompt (a cycle, too deep, a lone surrogate, a value of the wrong type)."""
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        where = ".".join(printable(str(p)) for p in (name, *first["loc"]))
        return InputError(f"input field {where!r}: {printable(first['msg'])}", field=name)
    said = str(error).lower()
    if not isinstance(error, RecursionError) and ("circular reference" in said or "cyclic" in said):
        return InputError(f"input field {name!r} contains itself (a cycle), which has no JSON form", field=name)
    if isinstance(error, RecursionError) or "recursion" in said:
        return InputError(f"input field {name!r} is nested too deeply to send to a model", field=name)
    found = next(surrogates_in(value, where=name), None)
    if found is not None or isinstance(error, (_NotUnicode, UnicodeError)) or "surrogates not allowed" in str(error):
        path, problem = found or (name, "it is not valid Unicode")
        return InputError(f"input field {path!r}: {problem}", field=name)
    return InputError(f"input field {name!r}: {printable(str(error))}", field=name)


def _immutable(annotation: Any) -> bool:
    """Whether values of this type cannot change after the call (so need no snapshot)."""
    import enum

    if annotation in (str, int, float, bool, type(None)):
        return True
    origin = get_origin(annotation)
    if origin is typing.Literal:
        return True
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return True
    if origin in (typing.Union, types.UnionType) or (origin is tuple and annotation is not tuple):
        return all(_immutable(a) for a in get_args(annotation) if a is not Ellipsis)
    return False


def _unsupported(qualname: str, what: str, annotation: Any, *, allow_none: bool) -> SignatureError | None:
    reason = unsupported_reason(annotation, allow_none=allow_none)
    if not reason:
        return None
    return SignatureError(rules.unserializable(qualname, what, type_name(annotation), reason), code=rules.SERIALIZABLE)


def _unwrap(annotation: Any) -> tuple[Any, str | None]:
    """Strip `Annotated[T, Field(description=...)]` (or a plain string) to T and its description."""
    if get_origin(annotation) is not Annotated:
        return annotation, None
    inner, *extras = get_args(annotation)
    description = None
    for extra in extras:
        if isinstance(extra, FieldInfo) and extra.description:
            description = extra.description
        elif isinstance(extra, str):
            description = extra
    return inner, description


def _adapter(qualname: str, what: str, annotation: Any) -> TypeAdapter[Any]:
    try:
        return TypeAdapter(annotation)
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as error:
        raise SignatureError(
            f"{qualname}: {what} has a type pydantic cannot handle: {error}", code=rules.SERIALIZABLE
        ) from None


def _schema(qualname: str, adapter: TypeAdapter[Any]) -> dict[str, Any]:
    import warnings

    from pydantic.json_schema import PydanticJsonSchemaWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
            return adapter.json_schema()
    except (PydanticUserError, TypeError) as error:
        raise SignatureError(f"{qualname}: the return type has no JSON schema: {error}") from None


def _split_docstring(doc: str) -> tuple[str, dict[str, str], str | None]:
    """Split a Google-style docstring into the task description, per-argument text and `Returns:`."""
    match = _SECTION.search(doc)
    if not match:
        return doc.strip(), {}, None
    instructions = doc[: match.start()].strip()
    arg_docs: dict[str, str] = {}
    returns: list[str] = []
    section = None
    current: str | None = None
    for line in doc[match.start() :].splitlines():
        header = _SECTION.match(line)
        if header:
            section = "returns" if header.group(1).startswith("Return") else "args"
            continue
        if section == "returns":
            if line.strip():
                returns.append(line.strip())
        elif section == "args":
            arg = _ARG_LINE.match(line)
            if arg and not line.startswith(" " * 8):
                current = arg.group(1).lstrip("*")
                arg_docs[current] = arg.group(2).strip()
            elif current and line.strip():
                arg_docs[current] = f"{arg_docs[current]} {line.strip()}".strip()
    return instructions, arg_docs, " ".join(returns) or None
