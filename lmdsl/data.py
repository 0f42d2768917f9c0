"""Examples, loading them from files, and the metric contract.

An `Example` is an immutable bag of named fields. The fields named like a target's
parameters are its inputs; the others are labels for the metric. A metric is
`(example, prediction) -> float | bool` or `(example, prediction, trace) -> float | bool`,
its value a bool or a number in [0, 1] (`metric_score`), or a `Score`: such a number with
`feedback`, text saying why, which optimizers (GEPA) show a reflection model and evaluation
rows keep (`metric_feedback`).
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lmdsl.calls.function import FuzzyFunction
from lmdsl.errors import InputError
from lmdsl.files import NotReadable, open_regular
from lmdsl.program import Program
from lmdsl.scores import Metric
from lmdsl.unicode import printable

MAX_LINE_CHARACTERS = 64 * 2**20  # one JSONL example; a longer line is not an example but a mistake

_RESERVED = frozenset({"fields", "with_fields", "inputs_for", "labels_for", "_fields"})


class Example:
    """An immutable bag of named fields, read as attributes: `Example(text="...", intent="refund").intent`.

    Which fields are inputs depends on the target: `inputs_for(target)` are the fields
    named like its parameters, `labels_for(target)` the rest. Two examples are equal
    when their fields are. The bag is immutable, its values are not copied: do not
    mutate a list you put in one.
    """

    __slots__ = ("_fields",)
    _fields: Mapping[str, Any]

    def __init__(self, /, **fields: Any) -> None:
        bad = [name for name in fields if name in _RESERVED or (name.startswith("__") and name.endswith("__"))]
        if bad:
            raise TypeError(
                f"Example: {bad[0]!r} cannot be a field name (it is taken by Example itself); "
                "rename it (load_examples(..., columns={...}) maps file columns to field names)"
            )
        object.__setattr__(self, "_fields", types.MappingProxyType(dict(fields)))

    @property
    def fields(self) -> Mapping[str, Any]:
        """Every field, by name (read-only)."""
        return self._fields

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: for field names, and for missing attributes.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        try:
            fields = object.__getattribute__(self, "_fields")
        except AttributeError:
            raise AttributeError(name) from None
        try:
            return fields[name]
        except KeyError:
            available = ", ".join(fields) or "none"
            raise AttributeError(f"Example has no field {name!r}; its fields are {available}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Example is immutable; use example.with_fields({name}=...) for a changed copy")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Example is immutable")

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._fields})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Example):
            return NotImplemented
        return dict(self._fields) == dict(other._fields)

    def __hash__(self) -> int:
        return hash(frozenset((name, _freeze(value)) for name, value in self._fields.items()))

    def __repr__(self) -> str:
        parts = []
        for name, value in self._fields.items():
            text = repr(value)
            if len(text) > 80:
                text = text[:77] + "..."
            parts.append(f"{name}={text}")
        return f"Example({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_example, (dict(self._fields),))

    def with_fields(self, /, **more: Any) -> Example:
        """A copy with these fields added or replaced."""
        return Example(**{**self._fields, **more})

    def inputs_for(self, target: Any) -> dict[str, Any]:
        """The fields named like the target's parameters (a fuzzy function's inputs, a
        program's parameters), in the target's order. Missing ones are simply absent."""
        names = _parameter_names(target)
        return {name: self._fields[name] for name in names if name in self._fields}

    def labels_for(self, target: Any) -> dict[str, Any]:
        """The fields that are not inputs of the target: what a metric compares against."""
        names = set(_parameter_names(target))
        return {name: value for name, value in self._fields.items() if name not in names}


def _rebuild_example(fields: dict[str, Any]) -> Example:
    return Example(**fields)


_UNHASHABLE = object()


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a field value, equal for equal values."""
    try:
        hash(value)
        return value
    except TypeError:
        pass
    if isinstance(value, Mapping):
        return frozenset((key, _freeze(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(item) for item in value)
    return _UNHASHABLE


def _parameter_names(target: Any) -> tuple[str, ...]:
    if isinstance(target, FuzzyFunction):
        return target.signature.input_names
    signature = target.python_signature if isinstance(target, Program) else None
    if signature is None:
        if not callable(target):
            raise TypeError(f"expected a fuzzy function or a program, not {target!r}")
        signature = inspect.signature(target)
    return tuple(
        p.name
        for p in signature.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    )


# -- loading ----------------------------------------------------------------------------------


def load_examples(
    path: str | os.PathLike[str],
    *,
    columns: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Read examples from a JSONL file (one JSON object a line; `.jsonl`, `.ndjson`) or a
    CSV file with a header row (`.csv`; every value is a string, which a fuzzy function's
    input validation converts).

    `columns` maps file columns to field names and keeps only those columns; `limit`
    stops after that many examples. A line that cannot be used is an `InputError`
    naming the file and the line.
    """
    file = Path(path)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be a whole number >= 0 or None, not {limit!r}")
    mapping = dict(columns) if columns is not None else None
    if mapping is not None:
        targets = list(mapping.values())
        duplicate = next((name for name in targets if targets.count(name) > 1), None)
        if duplicate is not None:
            raise ValueError(f"columns maps two file columns to the field {duplicate!r}")
    suffix = file.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(file)
    elif suffix == ".csv":
        rows = _csv_rows(file, mapping)
    else:
        raise InputError(
            f"{file}: cannot tell how to read {suffix or 'a file without an extension'}; use .jsonl or .csv"
        )
    examples: list[Example] = []
    if limit == 0:
        return examples
    for line, row in rows:
        if mapping is not None:
            missing = [column for column in mapping if column not in row]
            if missing:
                raise InputError(f"{file}, line {line}: no column {missing[0]!r}; it has {', '.join(row) or 'none'}")
            row = {name: row[column] for column, name in mapping.items()}
        try:
            examples.append(Example(**row))
        except TypeError as error:
            raise InputError(f"{file}, line {line}: {error}") from None
        if limit is not None and len(examples) >= limit:
            break
    return examples


def _open_text(file: Path, *, newline: str | None = None) -> io.TextIOWrapper:
    """The data file as UTF-8 text; `InputError` for a FIFO, a device, a directory, a missing file."""
    try:
        return io.TextIOWrapper(open_regular(file), encoding="utf-8-sig", newline=newline)
    except NotReadable as error:
        raise InputError(f"{printable(str(file))}: {error}") from None


def _jsonl_rows(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(file) as handle:
        number = 0
        while True:
            try:
                text = handle.readline(MAX_LINE_CHARACTERS + 1)
            except UnicodeDecodeError as error:
                raise InputError(f"{file}, line {number + 1}: not UTF-8 text ({error.reason})") from None
            if not text:
                return
            number += 1
            if len(text) > MAX_LINE_CHARACTERS:
                raise InputError(f"{file}, line {number}: longer than {MAX_LINE_CHARACTERS} characters")
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as error:
                raise InputError(f"{file}, line {number}: not valid JSON ({error})") from None
            if not isinstance(value, dict):
                raise InputError(f"{file}, line {number}: expected a JSON object, got {type(value).__name__}")
            yield number, value


def _csv_rows(file: Path, mapping: Mapping[str, str] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(file, newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                return
            duplicate = next((name for name in header if header.count(name) > 1), None)
            if duplicate is not None:
                raise InputError(f"{file}, line 1: the column {duplicate!r} appears twice in the header")
            if mapping is not None:
                missing = [column for column in mapping if column not in header]
                if missing:
                    raise InputError(f"{file}, line 1: no column {missing[0]!r}; the header has {', '.join(header)}")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise InputError(
                        f"{file}, line {reader.line_num}: {len(row)} value(s), but the header has {len(header)} column(s)"
                    )
                yield reader.line_num, dict(zip(header, row))
        except csv.Error as error:
            raise InputError(f"{file}, line {reader.line_num}: {error}") from None
        except UnicodeDecodeError as error:
            raise InputError(f"{file}, line {reader.line_num + 1}: not UTF-8 text ({error.reason})") from None


# -- the metric contract ---------------------------------------------------------------------


def metric_takes_trace(metric: Metric) -> bool:
    """Whether the metric takes a third positional argument (the trace), analysed once."""
    if not callable(metric):
        raise TypeError(f"metric must be a function (example, prediction[, trace]) -> float | bool, not {metric!r}")
    try:
        signature = inspect.signature(metric)
    except (TypeError, ValueError):  # some builtins have no signature: assume the common form
        return False
    kinds = inspect.Parameter
    positional = [
        p for p in signature.parameters.values() if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    variadic = any(p.kind is kinds.VAR_POSITIONAL for p in signature.parameters.values())
    required = [p for p in positional if p.default is p.empty]
    keyword_only = [
        p.name for p in signature.parameters.values() if p.kind is kinds.KEYWORD_ONLY and p.default is p.empty
    ]
    form = "a metric takes (example, prediction) or (example, prediction, trace)"
    if keyword_only:
        raise TypeError(f"metric {metric!r} has a required keyword-only parameter {keyword_only[0]!r}; {form}")
    if len(required) > 3:
        raise TypeError(f"metric {metric!r} needs {len(required)} positional arguments; {form}")
    if len(positional) < 2 and not variadic:
        raise TypeError(f"metric {metric!r} takes {len(positional)} positional argument(s); {form}")
    return variadic or len(positional) >= 3


def metric_fields(metric: Metric) -> tuple[str, ...]:
    """The fields a metric reads from its example as attributes (`example.label`), found in its
    code (functions nested in it included), in order of first use. Empty when the code cannot be
    read (a builtin, a callable object, a `functools.partial`): nothing is then known to be needed."""
    try:
        parameters = list(inspect.signature(metric).parameters.values())
    except (TypeError, ValueError):
        return ()
    function = getattr(metric, "__func__", metric)  # a bound method: its function's code
    code = getattr(function, "__code__", None)
    if (
        not parameters
        or code is None
        or parameters[0].kind
        not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
    ):
        return ()
    found: dict[str, None] = {}
    _attributes_read(code, parameters[0].name, found)
    return tuple(found)


def _attributes_read(code: types.CodeType, variable: str, found: dict[str, None]) -> None:
    """Add the attributes of `variable` that `code` reads (`variable.NAME`) and are not Example's own."""
    import dis  # only when a metric is checked against a dev set

    previous: dis.Instruction | None = None
    for instruction in dis.get_instructions(code):
        if (
            previous is not None
            and previous.opname.startswith(("LOAD_FAST", "LOAD_DEREF", "LOAD_CLOSURE"))
            and previous.argval == variable
            and instruction.opname in ("LOAD_ATTR", "LOAD_METHOD")
            and isinstance(instruction.argval, str)
            and not hasattr(Example, instruction.argval)
        ):
            found[instruction.argval] = None
        previous = instruction
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType) and variable in constant.co_freevars:
            _attributes_read(constant, variable, found)
