"""`@optimize`: attach a compile configuration (data, metric, optimizer, artifact) to a program."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from lmdsl import checking, rules
from lmdsl.compiler.artifact import write_artifact
from lmdsl.compiler.base import Compiled, Optimizer
from lmdsl.config import settings
from lmdsl.errors import ConfigurationError, SignatureError
from lmdsl.program import Program, artifact_path
from lmdsl.scores import Metric
from lmdsl.serializable import accepts, type_name
from lmdsl.tracing import annotate, span

if TYPE_CHECKING:
    from lmdsl.data import Example

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CompileConfig:
    trainset: Sequence[Example]
    metric: Metric
    optimizer: Optimizer
    devset: Sequence[Example] | None
    artifact: Path | None


class Optimization:
    """What `@lmdsl.optimize(...)` returns: applied to a program, it checks the wiring and
    attaches the configuration. A named class, so the mypy plugin checks the same wiring."""

    def __init__(self, config: CompileConfig, on_stale: Literal["warn", "raise"]) -> None:
        self.config = config
        self.on_stale = on_stale

    def __call__(self, program: Program[P, R]) -> Program[P, R]:
        if not isinstance(program, Program):
            raise TypeError("@lmdsl.optimize(...) decorates a program: put it above @lmdsl.program")
        config = self.config
        problems = [p for p in [_check_metric(config.metric, program)] if p]
        for examples in (config.trainset, config.devset or ()):
            problems.extend(_check_examples(examples, program))
        if problems and not checking.report(problems[0].with_problems(problems), program.__wrapped__):
            raise problems[0]
        if config.artifact is not None:  # relative to the program's file, not to where it is run from
            code = getattr(inspect.unwrap(program.__wrapped__), "__code__", None)
            config = dataclasses.replace(
                config, artifact=artifact_path(config.artifact, code.co_filename if code else None)
            )
        program.compile_config = config
        if config.artifact is not None:
            program.use_artifact(config.artifact, on_stale=self.on_stale)
        return program


def optimize(
    *,
    trainset: Sequence[Example],
    metric: Metric,
    optimizer: Optimizer | None = None,
    devset: Sequence[Example] | None = None,
    artifact: str | Path | None = None,
    on_stale: Literal["warn", "raise"] = "warn",
) -> Optimization:
    """Say how to compile a program: `lmdsl compile FILE.py:PROGRAM` then runs it and writes
    `artifact`, and at run time the program loads the artifact when it still matches.

    A relative `artifact` path is relative to the folder of the file that defines the program,
    not to the current directory, so the compiled program is found from wherever it is run (and
    `lmdsl compile` writes it there); an absolute path is used as it is.

    Applied to the program, it checks that `metric`'s prediction parameter takes the
    program's output and that every example has the program's required parameters
    (`SignatureError` with code `lmdsl-wiring`, as the mypy plugin reports them)."""
    from lmdsl.compiler.few_shot import RandomSearch

    path = Path(artifact) if artifact is not None else None
    config = CompileConfig(list(trainset), metric, optimizer or RandomSearch(), devset, path)
    return Optimization(config, on_stale)


def _check_metric(metric: Metric, program: Program[..., Any]) -> SignatureError | None:
    try:
        parameters = [
            p
            for p in inspect.signature(metric).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        hints = typing.get_type_hints(metric)
        output = typing.get_type_hints(program.__wrapped__).get("return", Any)
    except Exception:  # unreadable annotations: evaluation will tell
        return None
    if len(parameters) < 2:
        return None
    prediction = hints.get(parameters[1].name, Any)
    if accepts(prediction, output):
        return None
    name = getattr(metric, "__name__", repr(metric))
    return SignatureError(
        rules.metric_takes_output(name, program.__wrapped__.__name__, type_name(prediction), type_name(output)),
        code=rules.WIRING,
    )


def _check_examples(examples: Sequence[Example], program: Program[..., Any]) -> Iterator[SignatureError]:
    required = [
        p.name
        for p in program.python_signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    for number, example in enumerate(examples, start=1):
        fields = list(getattr(example, "fields", example))
        for name in required:
            if name not in fields:
                yield SignatureError(
                    rules.example_lacks_input(number, program.__wrapped__.__name__, name, fields), code=rules.WIRING
                )


def keeps_a_study(optimizer: object) -> bool:
    """Whether an optimizer keeps an Optuna study (and so takes a `storage` URL), as MIPRO does."""
    return dataclasses.is_dataclass(optimizer) and hasattr(optimizer, "storage")


def compile_program(program: Program[..., Any], *, write: bool = True, storage: str | None = None) -> Compiled:
    """Run a program's attached optimizer and, if it names one, write the artifact.

    `storage` (a database URL) overrides where a resumable optimizer keeps its study, so
    workers on several machines can share one; by default it is an SQLite file beside the artifact.
    """
    config = program.compile_config
    if not isinstance(config, CompileConfig):
        raise TypeError(f"{program.name} has no compile configuration: decorate it with @lmdsl.optimize(...)")
    program.reset_params()  # compile from the docstrings, never from a previously loaded artifact
    optimizer = config.optimizer
    if storage is not None and not keeps_a_study(optimizer):
        raise ConfigurationError(f"{type(optimizer).__name__} keeps no study, so it takes no storage URL (MIPRO does)")
    if storage is not None:
        optimizer = dataclasses.replace(optimizer, storage=storage)  # type: ignore[type-var]
    resuming_beside = getattr(optimizer, "resuming_beside", None)  # optimizers that keep state to resume from
    if config.artifact is not None and resuming_beside is not None:
        optimizer = resuming_beside(config.artifact)
    with span(
        f"compile {program.name}", {"lmdsl.program": program.name, "lmdsl.optimizer": type(optimizer).__name__}
    ) as current:
        compiled = optimizer.compile(program, config.trainset, config.metric, devset=config.devset)
        annotate(
            current,
            {
                "lmdsl.score": compiled.score,
                "lmdsl.baseline": compiled.baseline,
                "lmdsl.candidates": len(compiled.candidates),
                "lmdsl.lm_calls": compiled.lm_calls,
                "lmdsl.tokens": compiled.tokens,
            },
        )
    if write and config.artifact is not None:
        model = settings().model_for(None)
        write_artifact(config.artifact, program, compiled, model=model if isinstance(model, str) else model.name)
    return compiled
