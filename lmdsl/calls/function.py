"""`@fuzzy`: a typed Python function that a language model implements.

Decoration analyses the function once (signature, output format, prompt
prefix, the strategy's preparation). A call binds the arguments, runs the
strategy over the call loop (request, parse, validate, run the `ensure` checks,
retry with the error fed back), records the call and returns a value of the
annotated return type.
"""

from __future__ import annotations

import functools
import sys
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Generic, ParamSpec, TypeVar, overload

from lmdsl import checking
from lmdsl.calls.checks import AssertionWarning, Check
from lmdsl.calls.loop import CallRun, CallSpec, finish, generate
from lmdsl.calls.records import CallObserver, CallRecord, FunctionUsage, UsageCounter, observers
from lmdsl.config import ModelSpec, Settings, history, settings
from lmdsl.errors import OutputError, SignatureError
from lmdsl.lm.types import Backend, Message
from lmdsl.parallel import Outcome, run_each
from lmdsl.params import OVERLAY, Params, check_params
from lmdsl.prompt import OutputFormat, Prompt
from lmdsl.retrieval.nearest import NearestDemos
from lmdsl.signature import Signature, build_signature
from lmdsl.strategies.base import Generation, Strategy, predict
from lmdsl.tracing import telemetry

__all__ = ["AssertionWarning", "EnsureDecorator", "FuzzyDecorator", "FuzzyFunction", "fuzzy"]

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=Callable[..., object])


class FuzzyFunction(Generic[P, R]):
    """A function whose body a language model provides. Call it like the function it decorates."""

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

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
        self._overlaid_prompts: dict[int, Prompt] = {}  # by id(params) of the overlaid parameters
        # by id(params) of parameters choosing demos per call: them, their pool's index, prompts by choice
        self._nearest: dict[int, tuple[Params, NearestDemos, dict[tuple[int, ...], Prompt]]] = {}
        self._usage = UsageCounter()
        self._spec = CallSpec(name, self.output_format, (), retries)
        self._strategy_state = strategy.prepare(self.signature)
        self._single_generation = type(strategy).run is Strategy.run

    def __repr__(self) -> str:
        return f"<fuzzy function {self.signature.module}.{self.signature.qualname}>"

    # -- checks -----------------------------------------------------------------------------
    @overload
    def ensure(self, check: C, /, *, soft: bool = False) -> C: ...

    @overload
    def ensure(self, check: None = None, /, *, soft: bool = False) -> EnsureDecorator[P, R]: ...

    def ensure(self, check: C | None = None, /, *, soft: bool = False) -> C | EnsureDecorator[P, R]:
        """Register a check on the output: `check(output, *, <inputs by name>)` raises
        `lmdsl.Retry("why")` to reject it. The reason goes back to the model, within
        `retries`; after that a hard check raises `AssertionFailed`, and a soft one
        (`soft=True`) warns and keeps the last output."""

        decorator = EnsureDecorator(self, soft)
        return decorator if check is None else decorator(check)

    def _register_check(self, check: C, soft: bool) -> C:
        bound = self.signature.bind_check(check, "check")
        name = getattr(check, "__qualname__", repr(check))
        spec = self._spec
        self._spec = replace(spec, checks=(*spec.checks, Check(name, bound, soft)))
        return check

    # -- parameters: what optimizers set ------------------------------------------------
    @property
    def params(self) -> Params:
        """Instructions and demonstrations in force here (see `lmdsl.params.overlaid`).
        Assigning new ones sets the function's own and rebuilds the prompt prefix once."""
        return self._active_prompt().params

    @params.setter
    def params(self, params: Params) -> None:
        self._prompt = Prompt(self.signature, self.output_format, self.check_params(params))

    def check_params(self, params: Params) -> Params:
        """`params` with each demo validated (and coerced) against the signature: `InputError` if one does not fit."""
        return check_params(self.signature, params)

    @property
    def prompt_prefix(self) -> tuple[Message, ...]:
        """The exact messages before the input under the current parameters: instructions, demos."""
        return self._active_prompt().prefix

    def _active_prompt(self) -> Prompt:
        """The prompt of the parameters in force: an overlay's in this context, else the function's own."""
        overlay = OVERLAY.get()
        if not overlay:
            return self._prompt
        params = overlay.get(self)
        if params is None:
            return self._prompt
        prompt = self._overlaid_prompts.get(id(params))
        if prompt is None or prompt.params is not params:
            prompt = Prompt(self.signature, self.output_format, params)
            if len(self._overlaid_prompts) >= 32:  # candidates come and go; keep the recent ones
                self._overlaid_prompts.clear()
            self._overlaid_prompts[id(params)] = prompt
        return prompt

    def _nearest_prompt(self, prompt: Prompt, inputs: Mapping[str, Any]) -> Prompt:
        """The prompt with the demos of `prompt.params.nearest` nearest to `inputs` after its fixed
        demos; the pool's index and the prompts of recent choices are kept per parameter set."""
        params = prompt.params
        nearest = params.nearest
        assert nearest is not None
        kept = self._nearest.get(id(params))
        if kept is None or kept[0] is not params:
            if len(self._nearest) >= 8:  # candidates come and go; keep the recent ones
                self._nearest.clear()
            kept = (params, NearestDemos(nearest.pool), {})
            self._nearest[id(params)] = kept
        _, index, prompts = kept
        chosen = index.pick(inputs, nearest.k)
        found = prompts.get(chosen)
        if found is None:
            demos = (*params.demos, *(nearest.pool[i] for i in chosen))
            found = Prompt(self.signature, self.output_format, Params(params.instructions, demos))
            if len(prompts) >= 256:
                prompts.clear()
            prompts[chosen] = found
        return found

    def reset_params(self) -> None:
        """Back to the docstring's instructions and no demonstrations."""
        self.params = Params(self.signature.instructions)

    @property
    def usage(self) -> FunctionUsage:
        """Calls, LM calls and tokens spent by this function in this process."""
        return self._usage.totals

    # -- calling ----------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        record = self.invoke(self.signature.bind(args, kwargs))
        output: R = record.output
        return output

    async def acall(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call from asyncio without blocking the event loop (configuration and traces follow)."""
        import asyncio  # on first use: asyncio costs 30 ms of import time

        return await asyncio.to_thread(self, *args, **kwargs)

    def map(self, items: Iterable[Mapping[str, Any]], *, threads: int = 4) -> list[Outcome[R]]:
        """Call once per item (inputs by name) on up to `threads` threads. Results keep the
        input order; an item that fails holds its error instead of a value."""
        return run_each(lambda item: self.invoke(item).output, items, threads=threads)

    def invoke(
        self, inputs: Mapping[str, Any], *, feedback: tuple[Message, ...] = (), backend: Backend | None = None
    ) -> CallRecord:
        """Run on inputs given by name and return the full record of the call. `feedback`
        turns (an earlier answer and a critique) are added after the input. `backend`, when
        given, is the model to run on instead of the configured one (how a strategy's
        sub-calls follow their call's model). Inputs that do not fit the signature raise
        `InputError` before anything is sent.

        The steps: validate the inputs; ask the observers for a plan (a replay, or feedback
        to add); resolve the model and settings; run the strategy over the call loop
        (`lmdsl.calls.loop`); record the call, failed or not. With an OpenTelemetry tracer
        provider set, the call is a span (`lmdsl.tracing`).
        """
        if "opentelemetry.trace" in sys.modules and (traced := telemetry()) is not None:  # no frame when off
            return traced.fuzzy_call(self, inputs, feedback, backend, self._invoke)
        return self._invoke(inputs, feedback, backend)

    def _invoke(self, inputs: Mapping[str, Any], feedback: tuple[Message, ...], backend: Backend | None) -> CallRecord:
        started = time.perf_counter()
        signature = self.signature
        inputs = signature.snapshot(signature.validate_inputs(inputs))
        watchers = observers()
        if watchers:
            plan = next((p for w in reversed(watchers) if (p := w.plan(self, inputs)) is not None), None)
            if plan is not None:
                if plan.replay is not None:
                    return plan.replay
                feedback = plan.feedback + feedback
        config = settings()
        if backend is None:
            backend = config.backend_for(self.model, signature.qualname)
        try:
            generation = self._run(config, backend, inputs, feedback)
        except OutputError as error:
            failed = CallRecord(
                signature.qualname,
                backend.name,
                inputs,
                None,
                None,
                error.attempts,
                time.perf_counter() - started,
                str(error),
            )
            self._record(failed, watchers)
            raise
        record = CallRecord(
            signature.qualname,
            backend.name,
            inputs,
            generation.output,
            generation.reasoning,
            generation.attempts,
            time.perf_counter() - started,
            None,
            generation.details,
        )
        self._record(record, watchers)
        return record

    def _run(
        self, config: Settings, backend: Backend, inputs: Mapping[str, Any], feedback: tuple[Message, ...]
    ) -> Generation:
        """The strategy over the call loop, under the parameters in force and this call's settings."""
        prompt = self._active_prompt()
        if prompt.params.nearest is not None:
            prompt = self._nearest_prompt(prompt, inputs)
        temperature = config.temperature if self.temperature is None else self.temperature
        max_tokens = self.max_tokens or config.max_tokens
        if self._single_generation:  # predict, chain_of_thought: no strategy indirection on the hot path
            request = prompt.request(
                inputs, temperature=temperature, max_tokens=max_tokens, rollout=config.rollout, feedback=feedback
            )
            return generate(self._spec, backend, request, inputs)
        run = CallRun(
            self._spec,
            self._strategy_state,
            backend,
            prompt,
            inputs,
            temperature=temperature,
            max_tokens=max_tokens,
            feedback=feedback,
            rollout=config.rollout,
        )
        return finish(self._spec, self.strategy.run(run), inputs)

    def _record(self, record: CallRecord, watchers: tuple[CallObserver, ...]) -> None:
        history().add(record)
        self._usage.add(record)
        for watcher in watchers:
            watcher.record(self, record)


def _caller_namespace() -> Mapping[str, Any] | None:  # pragma: no mutate block
    """The local namespace of the code applying the decorator, when it is a function body.
    (Counts frames, so mutation testing must not wrap it or `fuzzy` in a trampoline.)"""
    frame = sys._getframe(2)
    return None if frame.f_locals is frame.f_globals else dict(frame.f_locals)


class EnsureDecorator(Generic[P, R]):
    """`@fn.ensure(soft=True)`: registers the check it decorates on `fn` (a named class, so
    the mypy plugin can check the check against `fn`)."""

    def __init__(self, function: FuzzyFunction[P, R], soft: bool) -> None:
        self.function = function
        self.soft = soft

    def __call__(self, check: C) -> C:
        try:
            return self.function._register_check(check, self.soft)
        except SignatureError as error:
            if checking.report(error, check):
                return check
            raise


class FuzzyDecorator:
    """`@fuzzy(...)` with options: applying it to a function makes a `FuzzyFunction`."""

    def __init__(self, localns: Mapping[str, Any] | None = None, **options: Any) -> None:
        self.options = options
        self.localns = localns

    def __call__(self, fn: Callable[P, R]) -> FuzzyFunction[P, R]:
        try:
            return FuzzyFunction(fn, localns=self.localns, **self.options)
        except SignatureError as error:
            if checking.report(error, fn):
                return typing.cast("FuzzyFunction[P, R]", _Rejected(fn))
            raise


class _Rejected:
    """Stands in for a fuzzy function that broke a rule while `lmdsl check` collects
    findings, so the rest of its module still loads and gets checked."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fn)

    def ensure(self, check: C | None = None, /, *, soft: bool = False) -> Any:
        return check if check is not None else (lambda function: function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise SignatureError(f"{getattr(self, '__qualname__', 'this fuzzy function')} breaks a rule; run lmdsl check")


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
) -> FuzzyFunction[P, R] | FuzzyDecorator:  # pragma: no mutate block
    """Make a typed function whose body a language model provides.

    The docstring is the instruction, the annotations are the interface: the call
    returns a value of the return type, or raises `OutputError` after `retries`
    failed repairs. Use bare (`@fuzzy`) or with options (`@fuzzy(strategy=...)`).
    """
    decorator = FuzzyDecorator(
        _caller_namespace(),
        model=model,
        strategy=strategy,
        retries=retries,
        temperature=temperature,
        max_tokens=max_tokens,
    )
    if fn is None:
        return decorator
    return decorator(fn)
