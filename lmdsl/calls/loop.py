"""The call loop, as a sequence of steps, and the `Run` a strategy drives.

`generate` is one generation of a typed output: **ask** the backend, **read** the reply
(parse and validate against the return type), **judge** it with the `ensure` checks, and on
a failure **re-ask** with the reply and the reason, within `retries`. When retries run out,
`exhausted` raises `OutputError`, or for a check: `AssertionFailed` (hard) or a warning and
the last valid output (soft). `finish` judges a strategy's final output when the strategy
built it another way (tools, code) and so could not feed a rejection back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from lmdsl.calls.checks import AssertionWarning, Check, first_rejection
from lmdsl.errors import AssertionFailed, OutputError
from lmdsl.lm.types import Attempt, Backend, Completion, Message, Request
from lmdsl.prompt import InvalidOutput, OutputFormat, Prompt, retry_request
from lmdsl.strategies.base import Generation
from lmdsl.unicode import printable
from lmdsl.warn import warn_user

if TYPE_CHECKING:
    from lmdsl.calls.function import FuzzyFunction
    from lmdsl.calls.records import CallRecord


@dataclass(frozen=True, slots=True)
class CallSpec:
    """What the loop needs of a fuzzy function, fixed when it is decorated (and when a check is added)."""

    qualname: str
    output_format: OutputFormat
    checks: tuple[Check, ...]
    retries: int


class _Failure(NamedTuple):
    """Why a reply was not accepted; `valid` is its output when it parsed and a check rejected it."""

    error: str
    truncated: bool = False
    check: Check | None = None
    valid: tuple[Any, str | None] | None = None


def generate(spec: CallSpec, backend: Backend, request: Request, inputs: Mapping[str, Any]) -> Generation:
    """ask → read → judge; on a failure, re-ask with the reply and the reason, up to `retries` times."""
    attempts: list[Attempt] = []
    failure = _Failure("no attempt was made")
    for _ in range(spec.retries + 1):
        completion = backend.complete(request)
        reading = _read(spec, completion, request, inputs)
        if not isinstance(reading, _Failure):
            attempts.append(
                Attempt(request, completion.text, None, completion.usage, completion.finish_reason, completion.cached)
            )
            return Generation(reading[0], reading[1], tuple(attempts))
        failure = reading
        text = printable(completion.text)  # a reply with lone surrogates is kept, escaped, so it can be shown
        check = failure.check.name if failure.check is not None else None
        attempts.append(
            Attempt(request, text, failure.error, completion.usage, completion.finish_reason, completion.cached, check)
        )
        request = retry_request(request, text, failure.error, truncated=failure.truncated)
    return exhausted(spec, failure, attempts)


def _read(
    spec: CallSpec, completion: Completion, request: Request, inputs: Mapping[str, Any]
) -> tuple[Any, str | None] | _Failure:
    """Parse and validate the reply, then judge it: the typed output and reasoning, or why not."""
    try:
        reading = spec.output_format.parse(completion.text, inputs)
    except InvalidOutput as invalid:
        if completion.finish_reason == "length":
            return _Failure(
                f"the reply was cut off at max_tokens={request.max_tokens} before it was complete", truncated=True
            )
        return _Failure(str(invalid))
    if spec.checks:
        rejection = first_rejection(spec.checks, reading[0], inputs)
        if rejection is not None:
            return _Failure(rejection[1], check=rejection[0], valid=reading)
    return reading


def exhausted(spec: CallSpec, failure: _Failure, attempts: list[Attempt]) -> Generation:
    """Retries ran out: raise for a reply that never fit or a hard check; warn for a soft one."""
    check = failure.check
    if check is None:
        raise OutputError(spec.qualname, attempts)
    if not check.soft or failure.valid is None:
        raise AssertionFailed(spec.qualname, attempts, failure.error)
    message = f"{spec.qualname}: soft check {check.name} still fails after {len(attempts)} attempt(s): {failure.error}"
    warn_user(message, AssertionWarning)
    output, reasoning = failure.valid
    return Generation(output, reasoning, tuple(attempts), {"soft_failure": failure.error}, settled=True)


def finish(spec: CallSpec, generation: Generation, inputs: Mapping[str, Any]) -> Generation:
    """Judge a strategy's final output. One built another way (tools, code) cannot take a
    rejection back, so a failing check fails (or warns) here, with no re-ask."""
    if not spec.checks or generation.settled:
        return generation
    rejection = first_rejection(spec.checks, generation.output, inputs)
    if rejection is None:
        return generation
    check, reason = rejection
    failure = _Failure(reason, check=check, valid=(generation.output, generation.reasoning))
    return exhausted(spec, failure, list(generation.attempts))


class CallRun:
    """The `Run` a strategy gets for one call: the call loop, bound to this call's settings."""

    __slots__ = (
        "_spec",
        "_state",
        "_backend",
        "_prompt",
        "inputs",
        "_temperature",
        "_max_tokens",
        "_feedback",
        "_rollout",
    )

    def __init__(
        self,
        spec: CallSpec,
        state: Any,
        backend: Backend,
        prompt: Prompt,
        inputs: Mapping[str, Any],
        *,
        temperature: float,
        max_tokens: int | None,
        feedback: tuple[Message, ...],
        rollout: int,
    ) -> None:
        self._spec, self._state, self._backend, self._prompt, self.inputs = spec, state, backend, prompt, inputs
        self._temperature, self._max_tokens, self._feedback = temperature, max_tokens, feedback
        self._rollout = rollout

    @property
    def function(self) -> str:
        return self._spec.qualname

    @property
    def state(self) -> Any:
        return self._state

    @property
    def backend(self) -> Backend:
        return self._backend

    def generate(
        self, *, rollout: int = 0, temperature: float | None = None, feedback: tuple[Message, ...] = ()
    ) -> Generation:
        request = self._prompt.request(
            self.inputs,
            temperature=self._temperature if temperature is None else temperature,
            max_tokens=self._max_tokens,
            rollout=self._rollout + rollout,
            feedback=self._feedback + feedback,
        )
        return generate(self._spec, self._backend, request, self.inputs)

    def render(self, output: Any) -> str:
        return self._spec.output_format.render(output)

    def call(
        self, function: FuzzyFunction[..., Any], inputs: Mapping[str, Any], *, feedback: tuple[Message, ...] = ()
    ) -> CallRecord:
        return function.invoke(inputs, feedback=feedback, backend=self._backend)
