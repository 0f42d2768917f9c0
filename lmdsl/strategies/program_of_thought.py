"""`program_of_thought`: the model writes Python, a sandbox runs it, its `result` is the output.

The code runs in a separate process with time, CPU and memory limits, no
network, no files, no environment and only an allow-list of modules (see
`lmdsl.sandbox`). A failure (an exception, a limit, a
forbidden operation, a `result` that does not fit the return type) is shown to
the model, which writes the code again, up to `attempts` times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from lmdsl.calls.function import FuzzyFunction
from lmdsl.errors import OutputError, SandboxError
from lmdsl.lm.types import Attempt, Message, Usage
from lmdsl.sandbox import SandboxLimits, run_code
from lmdsl.serializable import type_name
from lmdsl.signature import Signature, synthetic_function
from lmdsl.strategies.base import Generation, Run, Strategy


class Code(BaseModel):
    code: str = Field(description="Python code that assigns the final answer to a variable named result")


@dataclass(frozen=True)
class _Prepared:
    signature: Signature
    writer: FuzzyFunction[..., Code]


@dataclass(frozen=True)
class ProgramOfThought(Strategy):
    """Have the model compute the answer with Python code run in a sandbox."""

    attempts: int = 3
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"program_of_thought: attempts must be a whole number >= 1, not {self.attempts!r}")

    def prepare(self, signature: Signature) -> _Prepared:
        names = ", ".join(signature.input_names) or "none"
        modules = ", ".join(sorted(self.limits.allowed_modules))
        instructions = (
            f"{signature.instructions}\n\n"
            "Do not answer directly: write Python code that computes the answer. "
            f"The inputs are already defined as variables ({names}). "
            f"Assign the final answer, a {type_name(signature.output.annotation)}, to a variable named `result`. "
            f"You may import only: {modules}. There are no files, no network and no environment variables."
        )
        writer: FuzzyFunction[..., Code] = FuzzyFunction(
            synthetic_function(
                f"{signature.name}_code",
                instructions,
                [(f.name, f.annotation) for f in signature.inputs],
                Code,
                module=signature.module,
            )
        )
        return _Prepared(signature, writer)

    def run(self, run: Run) -> Generation:
        state: _Prepared = run.state
        sig = state.signature
        values = {
            f.name: f.adapter.dump_python(run.inputs[f.name], mode="json") for f in sig.inputs if f.name in run.inputs
        }
        attempts: list[Attempt] = []
        tries: list[dict[str, Any]] = []
        feedback: tuple[Message, ...] = ()
        for _ in range(self.attempts):
            written = run.call(state.writer, run.inputs, feedback=feedback)
            attempts.extend(written.attempts)
            code = written.output.code
            try:
                result = run_code(code, inputs=values, limits=self.limits)
                output = sig.output.adapter.validate_python(result.value)
            except SandboxError as error:
                problem = str(error)
            except ValidationError as error:
                detail = "; ".join(e["msg"] for e in error.errors(include_url=False)[:3])
                problem = f"`result` is not a {type_name(sig.output.annotation)}: {detail}"
            else:
                tries.append({"code": code, "error": None, "stdout": result.stdout})
                return Generation(
                    output, None, tuple(attempts), {"code": code, "stdout": result.stdout, "tries": tries}
                )
            tries.append({"code": code, "error": problem})
            attempts.append(Attempt(written.attempts[-1].request, code, problem, Usage(), "stop", False))
            feedback = (
                Message("assistant", state.writer.output_format.render(written.output)),
                Message("user", f"Running that code failed: {problem}. Write corrected code."),
            )
        raise OutputError(run.function, attempts)


def program_of_thought(*, attempts: int = 3, limits: SandboxLimits | None = None) -> ProgramOfThought:
    """A strategy where the model writes Python whose `result` becomes the typed output."""
    return ProgramOfThought(attempts=attempts, limits=limits or SandboxLimits())
