"""Scoring a fuzzy function or a program on labelled examples.

    devset = lmdsl.load_examples("tickets.jsonl")            # Example(message=..., intent=...)
    result = lmdsl.evaluate(route, devset, lambda ex, pred: pred == ex.intent)
    print(result.summary())                                  # score, errors, LM calls, tokens, time

An `Example` is an immutable bag of named fields. The fields named like the target's
parameters are its inputs; the others are labels for the metric. `evaluate` runs
every example on a thread pool (results keep the devset's order), counts the LM
calls and tokens each one really spent (cached replies cost nothing), and records
an example whose run or metric fails as score 0 with its error, instead of stopping.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import numbers
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmdsl.errors import InputError, LMDSLError
from lmdsl.files import NotReadable, open_regular
from lmdsl.fuzzy import FuzzyFunction
from lmdsl.parallel import run_each
from lmdsl.program import Program, TraceStep
from lmdsl.records import CallRecord, capture
from lmdsl.unicode import printable

if TYPE_CHECKING:
    from rich.progress import Progress

Target = Program[..., Any] | FuzzyFunction[..., Any]
Metric = Callable[..., float | bool]
"""`(example, prediction) -> float | bool` or `(example, prediction, trace) -> float | bool`."""

MAX_LINE_CHARACTERS = 64 * 2**20  # one JSONL example; a longer line is not an example but a mistake

_RESERVED = frozenset({"fields", "with_fields", "inputs_for", "labels_for", "_fields"})


# -- examples ---------------------------------------------------------------------------------


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
        raise InputError(f"{file}: cannot tell how to read {suffix or 'a file without an extension'}; use .jsonl or .csv")
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


# -- results ----------------------------------------------------------------------------------


class EvaluationError(LMDSLError):
    """`evaluate` stopped because more than `max_errors` examples failed. `result` holds
    the examples that ran (in devset order), their scores and their errors."""

    def __init__(self, message: str, result: EvaluationResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    """One example's evaluation. `prediction` is the typed output (None if the run failed);
    `error_type` and `error` say what failed (the run, or the metric: "metric: ...")."""

    index: int
    inputs: Mapping[str, Any]
    labels: Mapping[str, Any]
    prediction: Any
    score: float
    error: str | None
    error_type: str | None
    seconds: float
    lm_calls: int
    input_tokens: int
    output_tokens: int

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: values that are models, enums, tuples... converted by pydantic,
        anything else it cannot convert written as its repr."""
        return {
            "index": self.index,
            "inputs": _jsonable(dict(self.inputs)),
            "labels": _jsonable(dict(self.labels)),
            "prediction": _jsonable(self.prediction),
            "score": self.score,
            "error_type": self.error_type,
            "error": self.error,
            "seconds": self.seconds,
            "lm_calls": self.lm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate` measured: the mean metric value as a percentage (0-100), each
    example's row in devset order, and the LM calls, tokens and wall-clock time spent.
    Cached replies count as no LM call and no tokens."""

    score: float
    rows: tuple[EvaluationRow, ...] = field(repr=False)
    lm_calls: int
    input_tokens: int
    output_tokens: int
    seconds: float
    errors: int
    target: str = ""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def summary(self) -> str:
        """A few lines for a terminal: the score, the cost, and the first distinct errors."""
        name = f" {self.target}" if self.target else ""
        lines = [
            f"evaluate{name}: score {self.score:.1f} on {len(self.rows)} example(s), {self.errors} error(s); "
            f"{self.lm_calls} LM call(s), {self.input_tokens} input + {self.output_tokens} output tokens, "
            f"{self.seconds:.1f} s"
        ]
        seen: set[str] = set()
        for row in self.rows:
            if row.error is not None and row.error not in seen and len(seen) < 3:
                seen.add(row.error)
                message = row.error if len(row.error) <= 200 else row.error[:197] + "..."
                lines.append(f"  example {row.index}: {row.error_type}: {message}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "score": self.score,
            "examples": len(self.rows),
            "errors": self.errors,
            "lm_calls": self.lm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "seconds": self.seconds,
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the totals and every row as one JSON object (`rows`: one entry per example)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write one row per example: `index`, `inputs.<name>`..., `labels.<name>`...,
        `prediction`, `score`, `error_type`, `error`, `seconds`, `lm_calls`, tokens.
        Strings are written as they are, None as an empty cell, anything else as JSON text."""
        input_names: dict[str, None] = {}
        label_names: dict[str, None] = {}
        for row in self.rows:
            input_names.update(dict.fromkeys(row.inputs))
            label_names.update(dict.fromkeys(row.labels))
        fixed = ["prediction", "score", "error_type", "error", "seconds", "lm_calls", "input_tokens", "output_tokens"]
        header = ["index", *(f"inputs.{n}" for n in input_names), *(f"labels.{n}" for n in label_names), *fixed]
        with Path(path).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in self.rows:
                data = row.to_dict()
                cells: list[Any] = [row.index]
                cells += [data["inputs"].get(n) for n in input_names]
                cells += [data["labels"].get(n) for n in label_names]
                cells += [data[name] for name in fixed]
                writer.writerow([_cell(value) for value in cells])


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    try:
        return to_jsonable_python(value, fallback=repr)
    except Exception:
        return repr(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


# -- evaluating ---------------------------------------------------------------------------------


def evaluate(
    target: Target,
    devset: Iterable[Example | Mapping[str, Any]],
    metric: Metric,
    *,
    threads: int = 4,
    max_errors: int | None = None,
    progress: bool | None = None,
) -> EvaluationResult:
    """Run `target` (a fuzzy function or a program) on every example and score it with `metric`.

    `metric(example, prediction)` or `metric(example, prediction, trace)` (decided by how
    many positional parameters it takes) returns a bool or a number between 0 and 1; the
    score is their mean as a percentage. `trace` is the tuple of `TraceStep`s of the run
    (one step for a fuzzy function). Examples run on up to `threads` threads, each in a
    copy of the caller's context (configuration, `using`); rows keep the devset's order.
    An example whose run or metric raises scores 0 and keeps its error; once more than
    `max_errors` have (None: no limit), no new example starts and `EvaluationError`
    carries the partial result. `progress`: None shows a progress bar when stderr is a
    terminal and a plain line every ~10% otherwise, False nothing, True always the bar.
    """
    run = _runner(target)
    name = target.signature.qualname if isinstance(target, FuzzyFunction) else target.name
    with_trace = metric_takes_trace(metric)
    if max_errors is not None and (not isinstance(max_errors, int) or isinstance(max_errors, bool) or max_errors < 0):
        raise ValueError(f"max_errors must be a whole number >= 0 or None, not {max_errors!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, not {threads!r}")
    examples = [_as_example(item, number) for number, item in enumerate(devset)]
    if not examples:
        raise ValueError(f"evaluate {name}: the devset is empty")

    state = _State(len(examples), max_errors, _reporter(progress, name, len(examples)))

    def one(indexed: tuple[int, Example]) -> EvaluationRow | None:
        index, example = indexed
        if state.stop.is_set():
            return None
        row = _evaluate_one(target, run, metric, with_trace, index, example)
        state.finished(row)
        return row

    started = time.perf_counter()
    try:
        outcomes = run_each(one, list(enumerate(examples)), threads=threads)
    finally:
        state.reporter.close()
    seconds = time.perf_counter() - started
    rows: list[EvaluationRow] = []
    for outcome in outcomes:
        row = outcome.unwrap()  # evaluating one example never raises: an error here is a bug
        if row is not None:
            rows.append(row)
    result = _result(name, rows, seconds)
    if state.stop.is_set():
        first = next(row for row in rows if row.error is not None)
        raise EvaluationError(
            f"evaluate {name}: stopped after {result.errors} errors (max_errors={max_errors}); "
            f"{len(rows)} of {len(examples)} examples ran; first error (example {first.index}): "
            f"{first.error_type}: {first.error}",
            result,
        )
    return result


Run = Callable[[Example], tuple[Any, tuple[TraceStep, ...]]]


def _runner(target: Target) -> Run:
    if isinstance(target, FuzzyFunction):
        function: FuzzyFunction[..., Any] = target

        def run_function(example: Example) -> tuple[Any, tuple[TraceStep, ...]]:
            record = function.invoke(function.signature.validate_inputs(example.inputs_for(function)))
            return record.output, (TraceStep(function, record),)

        return run_function
    if isinstance(target, Program):
        program: Program[..., Any] = target

        def run_program(example: Example) -> tuple[Any, tuple[TraceStep, ...]]:
            result = program.invoke(example.inputs_for(program))
            return result.output, result.trace

        return run_program
    raise TypeError(
        f"evaluate needs a fuzzy function or a program, not {target!r}; "
        "decorate a function that calls fuzzy functions with @lmdsl.program"
    )


def metric_takes_trace(metric: Metric) -> bool:
    """Whether the metric takes a third positional argument (the trace), analysed once."""
    if not callable(metric):
        raise TypeError(f"metric must be a function (example, prediction[, trace]) -> float | bool, not {metric!r}")
    try:
        signature = inspect.signature(metric)
    except (TypeError, ValueError):  # some builtins have no signature: assume the common form
        return False
    kinds = inspect.Parameter
    positional = [p for p in signature.parameters.values() if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is kinds.VAR_POSITIONAL for p in signature.parameters.values())
    required = [p for p in positional if p.default is p.empty]
    keyword_only = [p.name for p in signature.parameters.values() if p.kind is kinds.KEYWORD_ONLY and p.default is p.empty]
    form = "a metric takes (example, prediction) or (example, prediction, trace)"
    if keyword_only:
        raise TypeError(f"metric {metric!r} has a required keyword-only parameter {keyword_only[0]!r}; {form}")
    if len(required) > 3:
        raise TypeError(f"metric {metric!r} needs {len(required)} positional arguments; {form}")
    if len(positional) < 2 and not variadic:
        raise TypeError(f"metric {metric!r} takes {len(positional)} positional argument(s); {form}")
    return variadic or len(positional) >= 3


def _as_example(item: Example | Mapping[str, Any], number: int) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, Mapping):
        return Example(**item)
    raise TypeError(f"devset item {number} is {type(item).__name__}, not an Example (or a mapping of fields)")


def _evaluate_one(
    target: Target, run: Run, metric: Metric, with_trace: bool, index: int, example: Example
) -> EvaluationRow:
    started = time.perf_counter()
    inputs = example.inputs_for(target)
    labels = example.labels_for(target)
    prediction: Any = None
    trace: tuple[TraceStep, ...] = ()
    score = 0.0
    error: BaseException | None = None
    stage = ""
    with capture() as captured:
        try:
            prediction, trace = run(example)
        except Exception as failure:
            error = failure
    # A backtracking program replays earlier calls: the same record is reported again.
    records: dict[int, CallRecord] = {id(record): record for record in captured}
    if error is None:
        try:
            value = metric(example, prediction, trace) if with_trace else metric(example, prediction)
            score = metric_score(value)
        except Exception as failure:
            error, stage = failure, "metric: "
    lm_calls = input_tokens = output_tokens = 0
    for record in records.values():
        for attempt in record.attempts:
            if not attempt.cached:
                lm_calls += 1
                input_tokens += attempt.usage.input_tokens
                output_tokens += attempt.usage.output_tokens
    return EvaluationRow(
        index=index,
        inputs=types.MappingProxyType(inputs),
        labels=types.MappingProxyType(labels),
        prediction=prediction,
        score=score if error is None else 0.0,
        error=None if error is None else f"{stage}{error}",
        error_type=None if error is None else type(error).__name__,
        seconds=time.perf_counter() - started,
        lm_calls=lm_calls,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def metric_score(value: object) -> float:
    """A metric's value as a float in [0, 1]: a bool is 1.0 or 0.0; anything else that is not
    a real number in [0, 1] (NaN included) is an error."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, numbers.Real):
        raise TypeError(f"returned {value!r} ({type(value).__name__}); a metric returns a bool or a number between 0 and 1")
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ValueError(f"returned {number!r}; a metric returns a bool or a number between 0 and 1")
    return number


def _result(name: str, rows: list[EvaluationRow], seconds: float) -> EvaluationResult:
    return EvaluationResult(
        score=100.0 * sum(row.score for row in rows) / len(rows) if rows else 0.0,
        rows=tuple(rows),
        lm_calls=sum(row.lm_calls for row in rows),
        input_tokens=sum(row.input_tokens for row in rows),
        output_tokens=sum(row.output_tokens for row in rows),
        seconds=seconds,
        errors=sum(row.error is not None for row in rows),
        target=name,
    )


# -- progress -----------------------------------------------------------------------------------


class _Reporter:
    """Silent: the base of the progress displays."""

    def update(self, done: int, score: float, errors: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines(_Reporter):
    """A plain line to stderr every ~10% (for logs and pipes)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.step = max(1, math.ceil(total / 10))

    def update(self, done: int, score: float, errors: int) -> None:
        if done % self.step == 0 or done == self.total:
            tail = f", {errors} error(s)" if errors else ""
            print(f"evaluate: {done}/{self.total}, score {score:.1f}{tail}", file=sys.stderr, flush=True)


class _Bar(_Reporter):
    """A rich progress bar on stderr."""

    def __init__(self, name: str, total: int, *, force: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=sys.stderr, force_terminal=True if force else None)
        self.progress: Progress = Progress(
            TextColumn("evaluate {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("score {task.fields[score]:.1f}{task.fields[errors]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task(name, total=total, score=0.0, errors="")
        self.progress.start()

    def update(self, done: int, score: float, errors: int) -> None:
        self.progress.update(self.task, completed=done, score=score, errors=f", {errors} error(s)" if errors else "")

    def close(self) -> None:
        self.progress.stop()


def _reporter(progress: bool | None, name: str, total: int) -> _Reporter:
    if progress is False:
        return _Reporter()
    if progress is True:
        return _Bar(name, total, force=True)
    if progress is not None:
        raise TypeError(f"progress must be None, True or False, not {progress!r}")
    stderr = sys.stderr
    isatty = getattr(stderr, "isatty", None)
    if stderr is not None and isatty is not None and isatty():
        return _Bar(name, total, force=False)
    return _Lines(total)


class _State:
    """Running totals shared by the worker threads; decides when to stop."""

    def __init__(self, total: int, max_errors: int | None, reporter: _Reporter) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.max_errors = max_errors
        self.reporter = reporter
        self.done = 0
        self.errors = 0
        self.score_sum = 0.0

    def finished(self, row: EvaluationRow) -> None:
        with self.lock:
            self.done += 1
            self.errors += row.error is not None
            self.score_sum += row.score
            if self.max_errors is not None and self.errors > self.max_errors:
                self.stop.set()
            self.reporter.update(self.done, 100.0 * self.score_sum / self.done, self.errors)


__all__ = [
    "EvaluationError",
    "EvaluationResult",
    "EvaluationRow",
    "Example",
    "evaluate",
    "load_examples",
    "metric_score",
    "metric_takes_trace",
]
