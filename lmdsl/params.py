"""A fuzzy function's free parameters: their values, their checks, their file format, and a
context-local layer of them.

`Params` (instructions and demos) is what an optimizer chooses and what a parameter file or
an artifact stores. `check_params` fits them to a signature. One encoder (`dump_params`,
`dump_demos`) and one decoder (`read_params_file`, `file_params`, `load_demos`) serve
`Program.save`/`load`, compiled artifacts (a parameter file with more keys) and the
candidates MIPRO keeps in its study. `overlaid` puts parameters in force for the current
context only (this thread or task, and what it starts with a copied context, as `map` and
`evaluate` do): the functions' own parameters are untouched, so two candidates can be
scored at once and a program used elsewhere during a compile keeps its parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from lmdsl._version import __version__
from lmdsl.errors import ArtifactError, InputError, LMDSLError
from lmdsl.files import NotReadable, read_regular
from lmdsl.signature import Signature
from lmdsl.unicode import printable, surrogate_problem, surrogates_in

PARAMS_FORMAT = "lmdsl-params/1"
NEAREST_VERSION = 1  # of a function's `nearest` entry: a file holding another is refused, not misread
MAX_NEAREST_K = 64
MAX_PARAMS_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Demo:
    """A worked example shown to the model: inputs by name, the output, optional reasoning."""

    inputs: Mapping[str, Any]
    output: Any
    reasoning: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))


@dataclass(frozen=True)
class Nearest:
    """Demos chosen per call: the `k` demos of `pool` nearest to the call's inputs (BM25 over
    their rendered inputs), shown after the fixed demos. The pool is fixed when compiling."""

    k: int
    pool: tuple[Demo, ...]


@dataclass(frozen=True)
class Params:
    """A fuzzy function's free parameters: what an optimizer sets, what an artifact stores."""

    instructions: str
    demos: tuple[Demo, ...] = field(default=())
    nearest: Nearest | None = None


class Parametrized(Protocol):
    """What has parameters: a fuzzy function (typed structurally: this module sits below it)."""

    @property
    def signature(self) -> Signature: ...

    @property
    def params(self) -> Params: ...


def check_params(signature: Signature, params: Params) -> Params:
    """`params` with each demo validated (and coerced) against `signature`: `InputError` if one does not fit."""
    problem = surrogate_problem(params.instructions)
    if problem is not None:
        raise InputError(f"{signature.qualname}: the instructions cannot be sent to a model: {problem}")
    nearest = params.nearest
    if nearest is not None:
        if type(nearest.k) is not int or not 1 <= nearest.k <= MAX_NEAREST_K or not nearest.pool:
            raise InputError(
                f"{signature.qualname}: demos chosen per call need 1 <= k <= {MAX_NEAREST_K} and a pool of demos, "
                f"not k={nearest.k!r} and {len(nearest.pool)} demo(s)"
            )
        nearest = Nearest(nearest.k, tuple(_checked_demo(signature, demo) for demo in nearest.pool))
    return Params(params.instructions, tuple(_checked_demo(signature, demo) for demo in params.demos), nearest)


def _checked_demo(signature: Signature, demo: Demo) -> Demo:
    try:
        inputs = signature.validate_inputs(demo.inputs)
    except InputError as error:
        raise InputError(f"{signature.qualname}: a demo's {error}", field=error.field) from None
    problem = next(surrogates_in(demo.output, where="output"), None)
    if problem is None and demo.reasoning is not None:
        problem = next(surrogates_in(demo.reasoning, where="reasoning"), None)
    if problem is not None:
        raise InputError(f"{signature.qualname}: a demo's {problem[0]}: {problem[1]}")
    try:
        output = signature.output.adapter.validate_python(demo.output, context=inputs)
    except (ValidationError, ValueError, RecursionError) as error:
        raise InputError(
            f"{signature.qualname}: a demo's output does not fit the return type: {printable(str(error))}"
        ) from None
    return Demo(inputs, output, demo.reasoning)


# -- the file format -----------------------------------------------------------------------------
class DemoFile(BaseModel):
    """A demo as a parameter file stores it: JSON inputs and output, checked against the
    signature only when loaded into a function."""

    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any]
    output: Any
    reasoning: str | None = None


class _NearestFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int
    k: int
    pool: list[DemoFile]


class _FunctionFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signature: str
    instructions: str
    demos: list[DemoFile] = []
    nearest: _NearestFile | None = None


class ParamsFile(BaseModel):
    """A parameter file or artifact, its shape checked; keys beyond these (an artifact's) are kept."""

    model_config = ConfigDict(extra="allow")
    format: str
    program: str
    functions: dict[str, _FunctionFile]


def dump_params(program: str, functions: Mapping[str, Parametrized]) -> dict[str, Any]:
    """Plain JSON data for the parameters of `functions`."""
    entries: dict[str, dict[str, Any]] = {
        name: {
            "signature": fn.signature.fingerprint,
            "instructions": fn.params.instructions,
            "demos": dump_demos(fn.signature, fn.params.demos),
        }
        for name, fn in functions.items()
    }
    for name, fn in functions.items():
        nearest = fn.params.nearest
        if nearest is not None:  # only then: files of functions without it stay as they were
            pool = dump_demos(fn.signature, nearest.pool)
            entries[name]["nearest"] = {"version": NEAREST_VERSION, "k": nearest.k, "pool": pool}
    return {"format": PARAMS_FORMAT, "lmdsl": __version__, "program": program, "functions": entries}


def dump_demos(sig: Signature, demos: Sequence[Demo]) -> list[dict[str, Any]]:
    """Demos as plain JSON data, each value dumped through its annotation's adapter."""
    return [
        {
            "inputs": {k: sig.field(k).adapter.dump_python(v, mode="json") for k, v in demo.inputs.items()},
            "output": sig.output.adapter.dump_python(demo.output, mode="json"),
            "reasoning": demo.reasoning,
        }
        for demo in demos
    ]


def load_demos(signature: Signature, data: object) -> tuple[Demo, ...]:
    """The inverse of `dump_demos`, checked against `signature`; `ArtifactError` if they do not fit."""
    try:
        entries = TypeAdapter(list[DemoFile]).validate_python(data)
        params = check_params(signature, Params("", tuple(Demo(d.inputs, d.output, d.reasoning) for d in entries)))
    except (ValidationError, LMDSLError) as error:
        raise ArtifactError(f"demos of {signature.qualname} do not fit its signature: {error}") from None
    return params.demos


def read_params_file(path: Path) -> ParamsFile:
    """Read and check the shape of a parameter file; any problem is an `ArtifactError`."""
    name = printable(str(path))
    try:
        text = read_regular(path, limit=MAX_PARAMS_BYTES).decode("utf-8")
    except NotReadable as error:
        raise ArtifactError(f"{name}: {error}") from None
    except UnicodeDecodeError as error:
        raise ArtifactError(f"{name}: not valid JSON: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:  # bad JSON, an integer past Python's digit limit, depth
        raise ArtifactError(f"{name}: not valid JSON ({printable(str(error))}); was it truncated?") from None
    found = next(surrogates_in(data), None)
    if found is not None:
        raise ArtifactError(f"{name}: {found[0]}: {found[1]}")
    try:
        parsed = ParamsFile.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{name}: not a parameter file: {where}: {first['msg']}") from None
    if parsed.format != PARAMS_FORMAT:
        raise ArtifactError(f"{name}: format {parsed.format!r} is not {PARAMS_FORMAT!r}")
    return parsed


def file_params(data: ParamsFile, functions: Mapping[str, Parametrized], *, source: str) -> dict[str, Params]:
    """Each function's parameters from a file, once every function matches it (all or nothing):
    `ArtifactError` naming the first function that is missing, extra, changed or does not fit."""
    missing = [name for name in functions if name not in data.functions]
    extra = [name for name in data.functions if name not in functions]
    if missing or extra:
        name = (missing or extra)[0]
        where = (
            "is not in the file"
            if missing
            else "is in the file but not in the program (one the program receives as an argument "
            "is known before its first run only when listed in @lmdsl.program(functions=[...]))"
        )
        raise ArtifactError(f"{source}: fuzzy function {name!r} {where}")
    staged: dict[str, Params] = {}
    for name, fn in functions.items():
        entry = data.functions[name]
        if entry.signature != fn.signature.fingerprint:
            raise ArtifactError(
                f"{source}: fuzzy function {name!r} changed since the file was written "
                "(its docstring, annotations or field descriptions differ)"
            )
        nearest = None
        if entry.nearest is not None:
            if entry.nearest.version != NEAREST_VERSION:
                raise ArtifactError(
                    f"{source}: fuzzy function {name!r}: its per-call demos have format version "
                    f"{entry.nearest.version}, this lmdsl reads {NEAREST_VERSION}: compile again"
                )
            pool = tuple(Demo(d.inputs, d.output, d.reasoning) for d in entry.nearest.pool)
            nearest = Nearest(entry.nearest.k, pool)
        demos = tuple(Demo(d.inputs, d.output, d.reasoning) for d in entry.demos)
        staged[name] = Params(entry.instructions, demos, nearest)
    checked: dict[str, Params] = {}
    for name, params in staged.items():
        try:
            checked[name] = check_params(functions[name].signature, params)
        except LMDSLError as error:
            raise ArtifactError(f"{source}: fuzzy function {name!r}: {error}") from None
    return checked


# -- the context-local overlay ----------------------------------------------------------------------
_NONE: Mapping[object, Params] = MappingProxyType({})

# The parameters in force in this context, by function object (checked before they get here).
OVERLAY: ContextVar[Mapping[object, Params]] = ContextVar("lmdsl_params_overlay", default=_NONE)


@contextmanager
def overlaid(params: Mapping[object, Params]) -> Iterator[None]:
    """Within the block, in this context only, each function in `params` uses those parameters.

    Nests: an inner block's parameters win for its functions, the outer block's stay for the rest.
    """
    token = OVERLAY.set(MappingProxyType({**OVERLAY.get(), **params}))
    try:
        yield
    finally:
        OVERLAY.reset(token)
