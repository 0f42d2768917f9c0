"""`@program`: ordinary Python that calls fuzzy functions, traced, repaired and parameterised.

During a run every fuzzy call (nested programs included) is recorded in a trace
held by a context variable. `require`/`suggest` inside a program backtrack: the
program function runs again from the start; fuzzy calls before the retried one
are replayed from the trace without calling the model (matched by position,
function and inputs; calls made in `map` worker threads have no stable position,
so they run again, usually from the cache) (the Python code between
them does run again); the retried call is the most recent fuzzy call completed
before the failing assertion, and it gets its previous output and the assertion's
message as feedback; every call after it runs afresh.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import threading
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from pydantic import PydanticUserError, TypeAdapter
from pydantic.errors import PydanticSchemaGenerationError

from lmdsl.calls.function import AssertionWarning, FuzzyFunction
from lmdsl.calls.records import CallObserver, CallPlan, CallRecord, observing
from lmdsl.config import settings, using
from lmdsl.errors import ArtifactError, AssertionFailed, InputError
from lmdsl.files import write_atomic
from lmdsl.lm.types import Message
from lmdsl.parallel import Outcome, run_each
from lmdsl.params import Params, dump_params, file_params, overlaid, read_params_file
from lmdsl.retrieval import RetrievalRecord
from lmdsl.scores import Metric
from lmdsl.signature import InputField, input_error
from lmdsl.tracing import mark, note, telemetry
from lmdsl.unicode import printable
from lmdsl.warn import caller_file, warn_user
from lmdsl.weights import Weights, load_weights

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One fuzzy call in a program run: the function and its record."""

    function: FuzzyFunction[..., Any]
    record: CallRecord


@dataclass(frozen=True, slots=True)
class RetrievalStep:
    """One retrieval in a program run, and where it came: after the first `after` fuzzy calls."""

    after: int
    record: RetrievalRecord


@dataclass(frozen=True)
class ProgramResult(Generic[R]):
    """A program run: its output, every fuzzy call in order, how often it backtracked, and
    every retrieval (`lmdsl.BM25`, `lmdsl.ColBERTv2`) of its last pass, in order."""

    output: R
    trace: tuple[TraceStep, ...]
    backtracks: int
    retrievals: tuple[RetrievalStep, ...] = ()


class StaleArtifactWarning(UserWarning):
    """A program's compiled artifact no longer matches its fuzzy functions; it runs uncompiled."""


class _Backtrack(BaseException):
    """Unwinds a program run to retry a call. A BaseException, so `except Exception` in
    user code between the assertion and the program does not swallow it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Run(CallObserver):
    """The state of one pass through a program: its trace, and the replay plan of a backtrack."""

    def __init__(
        self,
        program: str,
        replay: tuple[TraceStep, ...],
        target: int | None,
        feedback: tuple[Message, ...],
        backtracks_left: int,
    ) -> None:
        self.program = program
        self.steps: list[TraceStep] = []
        self.retrievals: list[RetrievalStep] = []
        self._replay = replay
        self._target = target
        self._feedback = feedback
        self.backtracks_left = backtracks_left

    def plan(self, function: Any, inputs: Mapping[str, Any]) -> CallPlan | None:
        index = len(self.steps)
        if index == self._target:
            mark("lmdsl.backtracked")
            return CallPlan(feedback=self._feedback)
        if index < len(self._replay):
            step = self._replay[index]
            if step.function is function and step.record.error is None and dict(step.record.inputs) == dict(inputs):
                self.steps.append(step)  # traced here: other observers saw this call the first time
                mark("lmdsl.replayed")
                return CallPlan(replay=step.record)
            self._replay = ()  # the run took another path: everything from here is fresh
        return None

    def record(self, function: Any, record: CallRecord) -> None:
        self.steps.append(TraceStep(function, record))

    def retrieved(self, record: Any) -> None:
        if isinstance(record, RetrievalRecord):
            self.retrievals.append(RetrievalStep(len(self.steps), record))


_active: ContextVar[_Run | None] = ContextVar("lmdsl_program_run", default=None)


def require(condition: object, message: str) -> None:
    """A hard program assertion: when false, backtrack (see the module docstring), and when
    the program's backtracks run out, raise `AssertionFailed`."""
    if condition:
        return
    run = _active.get()
    if run is not None and run.backtracks_left > 0 and run.steps:
        raise _Backtrack(message)
    attempts = run.steps[-1].record.attempts if run and run.steps else ()
    raise AssertionFailed(run.program if run else "require", attempts, message)


def suggest(condition: object, message: str) -> None:
    """A soft program assertion: backtracks like `require`, then warns and lets the run go on."""
    if condition:
        return
    run = _active.get()
    if run is not None and run.backtracks_left > 0 and run.steps:
        raise _Backtrack(message)
    warn_user(f"{run.program if run else 'suggest'}: suggestion still fails: {message}", AssertionWarning)


def current_trace() -> tuple[TraceStep, ...]:
    """The fuzzy calls of the program run in progress (empty outside a program)."""
    run = _active.get()
    return tuple(run.steps) if run else ()


class CompileConfigLike(typing.Protocol):
    """What `@lmdsl.optimize` attaches to a program (`lmdsl.compiler.decorator.CompileConfig`), as its
    readers see it. Declared here, not there, because the compiler sits above programs; examples and
    metrics (`lmdsl.data`) do too, hence `Sequence[Any]` and the metric's plain callable type."""

    @property
    def trainset(self) -> Sequence[Any]: ...
    @property
    def devset(self) -> Sequence[Any] | None: ...
    @property
    def metric(self) -> Metric: ...
    @property
    def optimizer(self) -> object: ...
    @property
    def artifact(self) -> Path | None: ...


class Program(Generic[P, R]):
    """A function that calls fuzzy functions. Call it like the function it decorates."""

    __name__: str
    __wrapped__: Callable[P, R]

    def __init__(
        self, fn: Callable[P, R], *, max_backtracks: int = 2, functions: Iterable[FuzzyFunction[..., Any]] = ()
    ) -> None:
        if type(max_backtracks) is not int or max_backtracks < 0:
            raise TypeError(f"max_backtracks must be a whole number >= 0, not {max_backtracks!r}")
        self._given = tuple(functions)
        for function in self._given:
            if not isinstance(function, FuzzyFunction):
                raise TypeError(f"functions= takes fuzzy functions, not {function!r}")
        self._called: dict[str, FuzzyFunction[..., Any]] = {}
        self._functions_lock = threading.Lock()
        functools.update_wrapper(self, fn)
        self._fn = fn
        self.name = getattr(fn, "__qualname__", repr(fn))
        self.max_backtracks = max_backtracks
        self.python_signature = inspect.signature(fn)
        self.artifact: Path | None = None
        self.weights: Weights | None = None  # fine-tuned weights the loaded artifact records, if any
        self._stale: Literal["warn", "raise"] = "warn"
        self._artifact_checked = True
        self._artifact_lock = threading.Lock()
        self.compile_config: CompileConfigLike | None = None  # set by @lmdsl.optimize

    def __repr__(self) -> str:
        return f"<program {self._fn.__module__}.{self.name}>"

    # -- the fuzzy functions it uses ------------------------------------------------------
    @property
    def functions(self) -> Mapping[str, FuzzyFunction[..., Any]]:
        """Every fuzzy function of the program, by name: those its code refers to (in order
        of first mention; `inner.name` for those of a nested program, and attributes of
        referenced classes and namespaces), those given as `functions=`, then those found
        calling in a run (a function passed in as an argument) under their own name."""
        with self._functions_lock:
            return types.MappingProxyType({**self._declared, **self._called})

    @functools.cached_property
    def _declared(self) -> dict[str, FuzzyFunction[..., Any]]:
        """The functions known before any run: referenced by the code (found on first use, so
        functions defined after the program count), and given as `functions=`."""
        found: dict[str, FuzzyFunction[..., Any]] = {}
        for name, value in _referenced(self._fn):
            if isinstance(value, FuzzyFunction) and value not in found.values():
                found[name] = value
            elif isinstance(value, Program) and value is not self:
                for inner, function in value.functions.items():
                    if function not in found.values():
                        found[f"{name}.{inner}"] = function
        for function in self._given:
            if function not in found.values():
                found[_free_name(function.__name__, found)] = function
        return found

    def _note_called(self, steps: Sequence[TraceStep]) -> None:
        """Remember the functions a run called that the code does not name (passed in as arguments)."""
        known = self._declared
        for step in steps:
            function = step.function
            if function in known.values() or function in self._called.values():
                continue
            with self._functions_lock:
                if function not in self._called.values():
                    self._called[_free_name(function.__name__, {**known, **self._called})] = function

    @property
    def params(self) -> dict[str, Params]:
        """The parameters (instructions, demos) of each fuzzy function, by name."""
        return {name: fn.params for name, fn in self.functions.items()}

    @params.setter
    def params(self, values: Mapping[str, Params]) -> None:
        functions = self._named(values)
        for name, params in values.items():
            functions[name].params = params

    @contextmanager
    def with_params(self, values: Mapping[str, Params]) -> Iterator[None]:
        """Within the block, in this context only (this thread or task, and what it starts
        with a copied context), the named functions use `values`; the program's own
        parameters are untouched. How optimizers score a candidate."""
        functions = self._named(values)
        with overlaid({functions[name]: functions[name].check_params(params) for name, params in values.items()}):
            yield

    def _named(self, values: Mapping[str, Params]) -> Mapping[str, FuzzyFunction[..., Any]]:
        functions = self.functions
        unknown = set(values) - set(functions)
        if unknown:
            raise KeyError(f"{self.name} has no fuzzy function {sorted(unknown)[0]!r}; it has {list(functions)}")
        return functions

    def reset_params(self, *, reload_artifact: bool = False) -> None:
        """Every fuzzy function back to its docstring and no demos. The artifact stays
        unloaded until `reload_artifact=True` (how compiling starts from scratch and then
        picks up the artifact it wrote)."""
        with self._artifact_lock:
            for function in self.functions.values():
                function.reset_params()
            self.weights = None
            self._artifact_checked = not reload_artifact

    def save(self, path: str | Path) -> None:
        """Write every fuzzy function's parameters to a JSON file (never pickle), atomically."""
        write_atomic(path, json.dumps(dump_params(self.name, self.functions), indent=2, ensure_ascii=False))

    def load(self, path: str | Path) -> None:
        """Set parameters from a file written by `save`. Loading runs no code; a file that
        does not match this program raises `ArtifactError` naming the function that differs.
        An artifact with fine-tuned weights (`weights`) makes the program run on them, unless a
        `using(model=...)` block names a model; weights that are missing or changed raise `ArtifactError`."""
        functions = self.functions
        data = read_params_file(Path(path))
        recorded = (data.model_extra or {}).get("weights")
        weights = None if recorded is None else load_weights(recorded, Path(path))
        for name, params in file_params(data, functions, source=str(path)).items():
            functions[name].params = params
        self.weights = weights

    def use_artifact(self, path: str | Path, *, on_stale: Literal["warn", "raise"] = "warn") -> None:
        """Load compiled parameters from `path` before the next run, if the file exists. A file
        that no longer matches the program warns and runs uncompiled, or raises `ArtifactError`.

        A relative `path` is relative to the folder of the file that calls `use_artifact` (not to
        the current directory), so the program finds its artifact from wherever it is run; an
        absolute path is used as it is, and so is a relative one given where there is no file
        (an interactive session), which stays relative to the current directory."""
        given = Path(path)  # absolute (as `@optimize` passes it, already resolved): no caller to look for
        self.artifact = given if given.is_absolute() else artifact_path(given, caller_file())
        self._stale = on_stale
        self._artifact_checked = False

    def _load_artifact(self) -> None:
        with self._artifact_lock:
            if self._artifact_checked or self.artifact is None:
                return
            self._artifact_checked = True
            if not os.path.lexists(self.artifact):
                logging.getLogger("lmdsl").info(
                    "%s: no artifact at %s yet; running uncompiled", self.name, self.artifact
                )
                return
            try:
                self.load(self.artifact)
            except ArtifactError as error:
                if self._stale == "raise":
                    raise
                message = f"{self.name} runs uncompiled: {error} (run `lmdsl compile` again)"
                warn_user(message, StaleArtifactWarning, at=self._fn)

    # -- running ------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run(*args, **kwargs).output

    def run(self, *args: P.args, **kwargs: P.kwargs) -> ProgramResult[R]:
        """Run and return the output with the trace of fuzzy calls."""
        bound = self._checked(self.python_signature.bind(*args, **kwargs))
        return self._execute(lambda: self._fn(*bound.args, **bound.kwargs), bound.arguments)

    def validate_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs by name, checked as a run checks them, without running: `InputError` naming
        the field that is unknown, missing or does not fit its annotation. The checked inputs."""
        parameters = self.python_signature.parameters
        named = [p for p in parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        takes = ", ".join(p.name for p in named) or "nothing"
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            unknown = next((name for name in inputs if name not in parameters), None)
            if unknown is not None:
                name = printable(str(unknown))
                raise InputError(f"unknown input field {name!r}; {self.name} takes {takes}", field=name)
        for parameter in named:
            if parameter.default is parameter.empty and parameter.name not in inputs:
                raise InputError(
                    f"missing input field {parameter.name!r}; {self.name} takes {takes}", field=parameter.name
                )
        try:
            bound = self.python_signature.bind(**inputs)
        except TypeError as error:  # a positional-only parameter given by name
            raise InputError(f"{self.name}: {error}") from None
        return dict(self._checked(bound).arguments)

    def invoke(self, inputs: Mapping[str, Any]) -> ProgramResult[R]:
        """Run on inputs given by name."""
        try:
            bound = self.python_signature.bind(**inputs)
        except TypeError as error:
            raise InputError(f"{self.name}: {error}") from None
        bound = self._checked(bound)
        return self._execute(lambda: self._fn(*bound.args, **bound.kwargs), bound.arguments)

    @functools.cached_property
    def _input_fields(self) -> tuple[InputField, ...]:
        """The parameters whose annotation pydantic can check (resolved on first use, so types
        defined after the program count); `Any`, protocols and arbitrary classes are not checked."""
        try:
            hints = typing.get_type_hints(self._fn)
        except Exception:  # unresolvable annotations: nothing to check against
            return ()
        fields = []
        for name, parameter in self.python_signature.parameters.items():
            annotation = hints.get(name, Any)
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or annotation is Any:
                continue
            try:
                adapter: TypeAdapter[Any] = TypeAdapter(annotation)
            except (PydanticSchemaGenerationError, PydanticUserError, TypeError):
                continue
            fields.append(InputField(name, annotation, None, adapter, parameter.default))
        return tuple(fields)

    def _checked(self, bound: inspect.BoundArguments) -> inspect.BoundArguments:
        """Arguments checked against their annotations: `InputError` for a value that does not
        fit. A value that already fits is passed as it is (the same object), one that needed
        coercing (JSON data for a model) as coerced."""
        arguments = bound.arguments
        for field in self._input_fields:
            if field.name not in arguments:
                continue
            value = arguments[field.name]
            try:
                checked = field.validate(value)
            except (ValueError, RecursionError) as error:
                raise input_error(field.name, value, error) from None
            if checked is not value and not _equal(checked, value):
                arguments[field.name] = checked
        return bound

    async def acall(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run from asyncio without blocking the event loop."""
        import asyncio  # on first use: asyncio costs 30 ms of import time

        return await asyncio.to_thread(self, *args, **kwargs)

    def map(self, items: Iterable[Mapping[str, Any]], *, threads: int = 4) -> list[Outcome[R]]:
        """Run once per item (inputs by name) on up to `threads` threads, in order, errors per item."""
        return run_each(lambda item: self.invoke(item).output, items, threads=threads)

    def _execute(self, call: Callable[[], R], inputs: Mapping[str, Any]) -> ProgramResult[R]:
        if not self._artifact_checked:
            self._load_artifact()
        if self.weights is not None and settings().model_override is None:  # a `using` block's model wins
            with using(model=self.weights.model):
                return self._execute(call, inputs)
        traced = telemetry()
        if traced is not None:  # an OpenTelemetry tracer provider is set: the run is a span
            return traced.program_run(self.name, inputs, lambda: self._passes(call))
        return self._passes(call)

    def _passes(self, call: Callable[[], R]) -> ProgramResult[R]:
        """Run the program, again from the start after each backtrack, replaying the calls before the retried one."""
        if not self._artifact_checked:
            self._load_artifact()
        outer = _active.get()
        if outer is not None:  # nested: the outer program traces and backtracks
            return ProgramResult(call(), (), 0)
        replay: tuple[TraceStep, ...] = ()
        target: int | None = None
        feedback: tuple[Message, ...] = ()
        backtracks = 0
        while True:
            run = _Run(self.name, replay, target, feedback, self.max_backtracks - backtracks)
            token = _active.set(run)
            try:
                with observing(run):
                    output = call()
                self._note_called(run.steps)
                return ProgramResult(output, tuple(run.steps), backtracks, tuple(run.retrievals))
            except _Backtrack as backtrack:
                target = len(run.steps) - 1
                retried = run.steps[target]
                replay = tuple(run.steps[:target])
                feedback = (
                    Message("assistant", retried.function.output_format.render(retried.record.output)),
                    Message("user", f"That answer was rejected: {backtrack.message} Answer again, fixing that."),
                )
                backtracks += 1
                note("lmdsl.backtrack", {"lmdsl.retried": retried.record.function}, {"lmdsl.reason": backtrack.message})
            finally:
                _active.reset(token)


@overload
def program(fn: Callable[P, R], /) -> Program[P, R]: ...


@overload
def program(
    *, max_backtracks: int = 2, functions: Iterable[FuzzyFunction[..., Any]] = ()
) -> Callable[[Callable[P, R]], Program[P, R]]: ...


def program(
    fn: Callable[P, R] | None = None, /, *, max_backtracks: int = 2, functions: Iterable[FuzzyFunction[..., Any]] = ()
) -> Program[P, R] | Callable[[Callable[P, R]], Program[P, R]]:
    """Mark a function that calls fuzzy functions as a program: traced, with backtracking
    assertions, and one collection of parameters that can be saved, loaded and compiled.
    `functions` names fuzzy functions the code reaches only at run time (passed in as an
    argument), so that compiling and loading an artifact know them before the first run."""
    listed = tuple(functions)
    if fn is None:
        return lambda function: Program(function, max_backtracks=max_backtracks, functions=listed)
    return Program(fn, max_backtracks=max_backtracks, functions=listed)


def artifact_path(path: str | Path, declared_in: str | None) -> Path:
    """Where an artifact path points: a relative one from the folder of `declared_in`, the file that
    names it, when that is a file; an absolute one, or one named outside any file, as it is."""
    given = Path(path)
    if given.is_absolute() or declared_in is None or not os.path.isfile(declared_in):
        return given
    return Path(os.path.dirname(os.path.abspath(declared_in))) / given


def _equal(left: object, right: object) -> bool:
    """`left == right`, False where comparing fails (a cycle, an array's elementwise result)."""
    try:
        return bool(left == right)
    except (ValueError, TypeError, RecursionError):
        return False


_MISSING = object()


def _free_name(name: str, taken: Mapping[str, object]) -> str:
    """`name`, or `name#2`, `name#3`... when another function already has it."""
    number, free = 1, name
    while free in taken:
        number += 1
        free = f"{name}#{number}"
    return free


def _referenced(fn: Callable[..., Any]) -> Iterator[tuple[str, Any]]:
    """Names a function's code (nested functions included) refers to, with their values:
    globals, closure variables, and the attributes it names of referenced modules, classes
    and namespaces (read statically: no property or `__getattr__` runs)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return
    namespace = dict(getattr(fn, "__globals__", {}))
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            namespace[name] = cell.cell_contents
        except ValueError:
            continue
    stack = [code]
    while stack:
        current = stack.pop(0)
        for name in (*current.co_names, *current.co_freevars):
            if name in namespace:
                value = namespace[name]
                yield name, value
                if isinstance(value, (types.ModuleType, type, types.SimpleNamespace)):
                    for attribute in current.co_names:
                        found = inspect.getattr_static(value, attribute, _MISSING)
                        if found is not _MISSING:
                            yield attribute, found
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))


def output_adapter(program: Program[..., Any]) -> TypeAdapter[Any]:
    """How to print a program's output as JSON: its return annotation, if it has a usable one."""
    try:
        annotation = typing.get_type_hints(program.__wrapped__).get("return", Any)
        return TypeAdapter(annotation)
    except Exception:
        return TypeAdapter(Any)
