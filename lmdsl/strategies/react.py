"""`react(tools=[...])`: the model reasons, calls typed Python tools, and then answers.

Each tool is an annotated Python function; its name, docstring and typed
parameters are shown to the model, and its arguments are validated by pydantic
before it runs. Each step is a call of a derived fuzzy function whose output is
a thought plus one tool call (or `done`), constrained to that shape; after
the loop a second derived function writes the typed answer from the trajectory.
The trajectory is kept in the call record's `details["trajectory"]`.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel, Field, create_model

from lmdsl import checking, rules
from lmdsl.calls.function import FuzzyFunction
from lmdsl.errors import SignatureError
from lmdsl.lm.types import Attempt
from lmdsl.serializable import type_name, unsupported_reason
from lmdsl.signature import Signature, synthetic_function
from lmdsl.strategies.base import Generation, Run, Strategy

FINISH = "done"  # "finish" drew a small model to stop before any tool call
MAX_OBSERVATION_CHARS = 2000


@dataclass(frozen=True)
class Tool:
    """A tool as the model sees it: name, description, and a model of its arguments."""

    name: str
    description: str
    function: Callable[..., Any]
    arguments: type[BaseModel]

    @classmethod
    def from_function(cls, function: Callable[..., Any]) -> Tool:
        name = getattr(function, "__name__", "")
        if not name.isidentifier() or name == FINISH:
            raise SignatureError(f"react: a tool needs a plain function name other than {FINISH!r}, not {name!r}")
        try:
            hints = typing.get_type_hints(function)
            params = inspect.signature(function).parameters.values()
        except Exception as error:
            raise SignatureError(f"react: tool {name}: its annotations cannot be resolved: {error}") from None
        fields: dict[str, Any] = {}
        problems: list[SignatureError] = []
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                problems.append(
                    SignatureError(f"react: tool {name}: *{param.name} is not supported; name each argument")
                )
            elif param.name not in hints:
                problems.append(SignatureError(rules.tool_unannotated(name, param.name), code=rules.WIRING))
            elif reason := unsupported_reason(hints[param.name], allow_none=True):
                problems.append(
                    SignatureError(f"react: tool {name}: parameter {param.name!r}: {reason}", code=rules.SERIALIZABLE)
                )
            else:
                default = ... if param.default is param.empty else param.default
                fields[param.name] = (hints[param.name], default)
        if "return" not in hints:
            problems.append(SignatureError(rules.tool_unannotated(name, None), code=rules.WIRING))
        if problems:
            raise problems[0].with_problems(problems)
        arguments = create_model(f"{name}_arguments", **fields)
        description = inspect.getdoc(function) or ""
        return cls(name, description.strip().split("\n\n")[0], function, arguments)

    def signature_text(self) -> str:
        args = ", ".join(f"{n}: {type_name(f.annotation)}" for n, f in self.arguments.model_fields.items())
        return f"{self.name}({args}){f' - {self.description}' if self.description else ''}"


@dataclass(frozen=True)
class _Prepared:
    tools: Mapping[str, Tool]
    step: FuzzyFunction[..., Any]
    answer: FuzzyFunction[..., Any]


@dataclass(frozen=True)
class React(Strategy):
    """Reason and act: up to `max_steps` tool calls, then a typed answer."""

    tools: tuple[Callable[..., Any], ...] = ()
    max_steps: int = 5
    _tools: tuple[Tool, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tools:
            raise SignatureError("react needs at least one tool")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise SignatureError(f"react: max_steps must be a whole number >= 1, not {self.max_steps!r}")
        checked: list[Tool] = []
        for function in self.tools:
            try:
                checked.append(Tool.from_function(function))
            except SignatureError as error:
                if not checking.report(error, function):
                    raise
        tools = tuple(checked)
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise SignatureError(f"react: tool names must be distinct, got {names}")
        object.__setattr__(self, "_tools", tools)

    def prepare(self, signature: Signature) -> _Prepared:
        inputs = [(f.name, _described(f.annotation, f.description)) for f in signature.inputs]
        if any(name == "trajectory" for name, _ in inputs):
            raise SignatureError(f"{signature.qualname}: react adds an input named 'trajectory'; rename yours")
        trajectory = ("trajectory", _described(str, "the tool calls so far and what they returned"))
        step = FuzzyFunction(
            synthetic_function(
                f"{signature.name}_step",
                _step_instructions(signature.instructions, self._tools),
                [*inputs, trajectory],
                _step_model(signature.name, self._tools),
                module=signature.module,
            )
        )
        answer = FuzzyFunction(
            synthetic_function(
                signature.name,
                f"{signature.instructions}\n\nUse the trajectory of tool calls and their results.",
                [*inputs, trajectory],
                _described(signature.output.annotation, signature.output.description),
                module=signature.module,
            )
        )
        return _Prepared({t.name: t for t in self._tools}, step, answer)

    def run(self, run: Run) -> Generation:
        state: _Prepared = run.state
        attempts: list[Attempt] = []
        trajectory: list[dict[str, Any]] = []
        for _ in range(self.max_steps):
            step = run.call(state.step, {**run.inputs, "trajectory": _render(trajectory)})
            attempts.extend(step.attempts)
            action = step.output.action
            if action.tool == FINISH:
                break
            tool = state.tools[action.tool]
            arguments = {name: getattr(action.args, name) for name in tool.arguments.model_fields}
            trajectory.append(
                {
                    "thought": step.output.thought,
                    "tool": tool.name,
                    "args": action.args.model_dump(mode="json"),
                    "observation": _observe(tool, arguments),
                }
            )
        final = run.call(state.answer, {**run.inputs, "trajectory": _render(trajectory)})
        attempts.extend(final.attempts)
        return Generation(final.output, final.reasoning, tuple(attempts), {"trajectory": trajectory})


def react(tools: Sequence[Callable[..., Any]], *, max_steps: int = 5) -> React:
    """A strategy that lets the model call `tools` (annotated Python functions) before answering."""
    return React(tools=tuple(tools), max_steps=max_steps)


def _described(annotation: Any, description: str | None) -> Any:
    return typing.Annotated[annotation, Field(description=description)] if description else annotation


def _step_model(name: str, tools: Sequence[Tool]) -> type[BaseModel]:
    """`{thought, action}` where the action is one tool call with typed arguments, or done."""
    choices: list[Any] = []
    for tool in tools:
        tag: Any = Literal[tool.name]
        choices.append(create_model(f"call_{tool.name}", tool=(tag, ...), args=(tool.arguments, ...)))
    done: Any = Literal[FINISH]
    choices.append(create_model(FINISH, tool=(done, ...)))
    action: Any = Union[tuple(choices)]  # noqa: UP007  (built at run time: X | Y needs the members spelled out)
    return create_model(
        f"{name}_step",
        thought=(str, Field(description="what you know so far and what to do next")),
        action=(action, Field(description=f'one tool call, or {{"tool": "{FINISH}"}} when you can answer')),
    )


def _step_instructions(task: str, tools: Sequence[Tool]) -> str:
    listing = "\n".join(f"- {t.signature_text()}" for t in tools)
    return (
        f"{task}\n\nFirst gather facts with the tools, one call per step; only when the trajectory "
        f'already holds what you need, choose "{FINISH}". The tools:\n{listing}'
    )


def _observe(tool: Tool, arguments: dict[str, Any]) -> str:
    """A tool's result as text for the model; a failure is reported, not raised."""
    try:
        value = tool.function(**arguments)
    except Exception as error:
        return f"error: {type(error).__name__}: {error}"
    text = value if isinstance(value, str) else _json(value)
    return text if len(text) <= MAX_OBSERVATION_CHARS else text[:MAX_OBSERVATION_CHARS] + " ...(truncated)"


def _json(value: Any) -> str:
    from pydantic_core import to_json

    try:
        return to_json(value).decode()
    except Exception:
        return repr(value)


def _render(trajectory: Sequence[Mapping[str, Any]]) -> str:
    if not trajectory:
        return "(no tool calls yet)"
    lines = []
    for number, step in enumerate(trajectory, 1):
        lines.append(f"Thought {number}: {step['thought']}")
        lines.append(f"Action {number}: {step['tool']}({json.dumps(step['args'], ensure_ascii=False)})")
        lines.append(f"Observation {number}: {step['observation']}")
    return "\n".join(lines)
