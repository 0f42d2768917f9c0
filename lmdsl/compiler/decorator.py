"""`@optimize`: attach a compile configuration (data, metric, optimizer, artifact) to a program."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from lmdsl.config import settings
from lmdsl.compiler.artifact import write_artifact
from lmdsl.compiler.base import Compiled, Metric, Optimizer
from lmdsl.program import Program

if TYPE_CHECKING:
    from lmdsl.evaluate import Example

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CompileConfig:
    trainset: Sequence[Example]
    metric: Metric
    optimizer: Optimizer
    devset: Sequence[Example] | None
    artifact: Path | None


def optimize(
    *,
    trainset: Sequence[Example],
    metric: Metric,
    optimizer: Optimizer | None = None,
    devset: Sequence[Example] | None = None,
    artifact: str | Path | None = None,
    on_stale: Literal["warn", "raise"] = "warn",
) -> Callable[[Program[P, R]], Program[P, R]]:
    """Say how to compile a program: `lmdsl compile FILE.py:PROGRAM` then runs it and writes
    `artifact`, and at run time the program loads the artifact when it still matches."""

    def attach(program: Program[P, R]) -> Program[P, R]:
        if not isinstance(program, Program):
            raise TypeError("@lmdsl.optimize(...) decorates a program: put it above @lmdsl.program")
        from lmdsl.compiler.few_shot import RandomSearch

        path = Path(artifact) if artifact is not None else None
        program.compile_config = CompileConfig(list(trainset), metric, optimizer or RandomSearch(), devset, path)
        if path is not None:
            program.use_artifact(path, on_stale=on_stale)
        return program

    return attach


def compile_program(program: Program[..., Any], *, write: bool = True) -> Compiled:
    """Run a program's attached optimizer and, if it names one, write the artifact."""
    config = program.compile_config
    if not isinstance(config, CompileConfig):
        raise TypeError(f"{program.name} has no compile configuration: decorate it with @lmdsl.optimize(...)")
    optimizer = config.optimizer
    if config.artifact is not None and getattr(optimizer, "storage", "unset") is None and dataclasses.is_dataclass(optimizer):
        # a resumable optimizer keeps its study beside the artifact unless told otherwise
        storage = f"sqlite:///{config.artifact.with_name(config.artifact.name + '.optuna.sqlite3').resolve()}"
        optimizer = dataclasses.replace(optimizer, storage=storage, study_name=getattr(optimizer, "study_name", None) or program.name)
    compiled = optimizer.compile(program, config.trainset, config.metric, devset=config.devset)
    if write and config.artifact is not None:
        model = settings().model_for(None)
        write_artifact(config.artifact, program, compiled, model=model if isinstance(model, str) else model.name)
    return compiled
