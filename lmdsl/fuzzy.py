"""`@fuzzy`: a typed Python function that a language model implements.

Decoration analyses the function once (signature, output format, prompt
prefix). A call binds the arguments, runs the strategy over the call loop
(request, parse, validate, retry with the error fed back), records the call and
returns a value of the annotated return type.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pydantic import ValidationError

from lmdsl.config import ModelSpec, history, settings
from lmdsl.errors import Attempt, InputError, OutputError, SignatureError
from lmdsl.lm.types import Backend
from lmdsl.prompt import Demo, InvalidOutput, OutputFormat, Params, Prompt, retry_request
from lmdsl.records import CallRecord, FunctionUsage, UsageCounter
from lmdsl.signature import Signature, build_signature
from lmdsl.strategies import Generation, Strategy, predict

P = ParamSpec("P")
R = TypeVar("R")


class FuzzyFunction(Generic[P, R]):
    """A function whose body a language model provides. Call it like the function it decorates."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        model: ModelSpec | None = None,
        strategy: Strategy = predict,
        retries: int = 2,
        temperature: float | None = None,
        max_tokens: int | None = None,
        localns: Mapping[str, Any] | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.signature: Signature = build_signature(fn, localns)
        name = self.signature.qualname
        if not isinstance(strategy, Strategy):
            raise SignatureError(
                f"{name}: strategy must be a strategy value such as lmdsl.predict or "
                f"lmdsl.chain_of_thought, not {strategy!r}"
            )
        if not isinstance(retries, int) or retries < 0:
            raise SignatureError(f"{name}: retries must be a whole number >= 0, not {retries!r}")
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            raise SignatureError(f"{name}: temperature must be between 0 and 2, not {temperature!r}")
        if max_tokens is not None and max_tokens < 1:
            raise SignatureError(f"{name}: max_tokens must be positive, not {max_tokens!r}")
        self.model = model
        self.strategy = strategy
        self.retries = retries
        self.temperature = temperature
        self.max_tokens = max_tokens
        try:
            self.output_format = OutputFormat(self.signature.output, reasoning=strategy.reasoning)
        except ValueError as error:
            raise SignatureError(f"{name}: {error}") from None
        self._prompt = Prompt(self.signature, self.output_format, Params(self.signature.instructions))
        self._usage = UsageCounter()
        self._single_generation = type(strategy).run is Strategy.run

    def __repr__(self) -> str:
        return f"<fuzzy function {self.signature.module}.{self.signature.qualname}>"

    # -- parameters: what optimizers set ------------------------------------------------
    @property
    def params(self) -> Params:
        """Instructions and demonstrations. Assigning new ones rebuilds the prompt prefix once."""
        return self._prompt.params

    @params.setter
    def params(self, params: Params) -> None:
        demos = tuple(self._checked_demo(demo) for demo in params.demos)
        self._prompt = Prompt(self.signature, self.output_format, Params(params.instructions, demos))

    def reset_params(self) -> None:
        """Back to the docstring's instructions and no demonstrations."""
        self.params = Params(self.signature.instructions)

    def _checked_demo(self, demo: Demo) -> Demo:
        sig = self.signature
        try:
            inputs = sig.validate_inputs(demo.inputs)
            output = sig.output.adapter.validate_python(demo.output)
        except ValidationError as error:
            raise InputError(f"{sig.qualname}: a demo's output does not fit the return type: {error}") from None
        except InputError as error:
            raise InputError(f"{sig.qualname}: a demo's {error}", field=error.field) from None
        return Demo(inputs, output, demo.reasoning)

    @property
    def usage(self) -> FunctionUsage:
        """Calls, LM calls and tokens spent by this function in this process."""
        return self._usage.totals

    # -- calling --------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        record = self.invoke(self.signature.bind(args, kwargs))
        output: R = record.output
        return output

    def invoke(self, inputs: Mapping[str, Any]) -> CallRecord:
        """Run on inputs given by name and return the full record of the call."""
        started = time.perf_counter()
        config = settings()
        model = config.model_for(self.model)
        backend = config.backend(model)
        prompt = self._prompt
        temperature = config.temperature if self.temperature is None else self.temperature
        max_tokens = self.max_tokens or config.max_tokens

        try:
            if self._single_generation:  # predict, chain_of_thought: no strategy indirection on the hot path
                request = prompt.request(inputs, temperature=temperature, max_tokens=max_tokens)
                generation = self._generate(backend, request)
            else:

                def generate(*, rollout: int = 0, temperature: float | None = temperature) -> Generation:
                    request = prompt.request(
                        inputs,
                        temperature=config.temperature if temperature is None else temperature,
                        max_tokens=max_tokens,
                        rollout=rollout,
                    )
                    return self._generate(backend, request)

                generation = self.strategy.run(generate)
        except OutputError as error:
            self._record(
                CallRecord(
                    self.signature.qualname, backend.name, inputs, None, None,
                    error.attempts, time.perf_counter() - started, str(error),
                )
            )
            raise
        record = CallRecord(
            self.signature.qualname, backend.name, inputs, generation.output, generation.reasoning,
            generation.attempts, time.perf_counter() - started,
        )
        self._record(record)
        return record

    def _record(self, record: CallRecord) -> None:
        history().add(record)
        self._usage.add(record)

    def _generate(self, backend: Backend, request: Any) -> Generation:
        """The call loop: ask, parse, validate; on failure, show the model its reply and the error."""
        attempts: list[Attempt] = []
        parse = self.output_format.parse
        for _ in range(self.retries + 1):
            completion = backend.complete(request)
            try:
                output, reasoning = parse(completion.text)
            except InvalidOutput as invalid:
                truncated = completion.finish_reason == "length"
                error = (
                    f"the reply was cut off at max_tokens={request.max_tokens} before it was complete"
                    if truncated
                    else str(invalid)
                )
                attempts.append(
                    Attempt(request, completion.text, error, completion.usage, completion.finish_reason, completion.cached)
                )
                request = retry_request(request, completion.text, error, truncated=truncated)
                continue
            attempts.append(
                Attempt(request, completion.text, None, completion.usage, completion.finish_reason, completion.cached)
            )
            return Generation(output, reasoning, tuple(attempts))
        raise OutputError(self.signature.qualname, attempts)


def _caller_namespace() -> Mapping[str, Any] | None:
    """The local namespace of the code applying the decorator, when it is a function body."""
    frame = sys._getframe(2)
    return None if frame.f_locals is frame.f_globals else dict(frame.f_locals)


class FuzzyDecorator:
    """`@fuzzy(...)` with options: applying it to a function makes a `FuzzyFunction`."""

    def __init__(self, localns: Mapping[str, Any] | None = None, **options: Any) -> None:
        self.options = options
        self.localns = localns

    def __call__(self, fn: Callable[P, R]) -> FuzzyFunction[P, R]:
        return FuzzyFunction(fn, localns=self.localns, **self.options)


@overload
def fuzzy(fn: Callable[P, R], /) -> FuzzyFunction[P, R]: ...


@overload
def fuzzy(
    *,
    model: ModelSpec | None = None,
    strategy: Strategy = predict,
    retries: int = 2,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> FuzzyDecorator: ...


def fuzzy(
    fn: Callable[P, R] | None = None,
    /,
    *,
    model: ModelSpec | None = None,
    strategy: Strategy = predict,
    retries: int = 2,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> FuzzyFunction[P, R] | FuzzyDecorator:
    """Make a typed function whose body a language model provides.

    The docstring is the instruction, the annotations are the interface: the call
    returns a value of the return type, or raises `OutputError` after `retries`
    failed repairs. Use bare (`@fuzzy`) or with options (`@fuzzy(strategy=...)`).
    """
    decorator = FuzzyDecorator(
        _caller_namespace(),
        model=model, strategy=strategy, retries=retries, temperature=temperature, max_tokens=max_tokens
    )
    if fn is None:
        return decorator
    return decorator(fn)
