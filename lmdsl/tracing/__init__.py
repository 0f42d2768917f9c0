"""OpenTelemetry tracing of program runs, fuzzy calls and model calls (GenAI semantic conventions).

lmdsl follows the GenAI semantic conventions of OpenTelemetry semantic-conventions v1.41.0
(`SEMCONV_VERSION`; the conventions are in development status, so the version is pinned):
model calls are `chat {model}` spans with `gen_ai.*` attributes, the metrics are
`gen_ai.client.token.usage` and `gen_ai.client.operation.duration`, evaluation scores are
`gen_ai.evaluation.result` events. Program runs, fuzzy calls, evaluations and compiles are
spans of their own around them.

Tracing is on when the application has set an OpenTelemetry tracer provider
(`opentelemetry.trace.set_tracer_provider`), and free when it has not: lmdsl never imports
OpenTelemetry itself, it looks for the API module the application imported (one dictionary
look-up per call). Prompt and reply content, inputs and outputs are recorded only on opt-in
(`capturing_content()`, or `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`); an
error's message too, since it can quote a reply. API keys never: backends keep them out of
everything they show.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic_core import to_json

from lmdsl._version import __version__
from lmdsl.calls.records import CallRecord
from lmdsl.config import intercepting
from lmdsl.errors import OutputError
from lmdsl.lm.types import Attempt, Backend, Completion, Message, Request

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "CONTENT_VARIABLE",
    "SEMCONV_VERSION",
    "Telemetry",
    "annotate",
    "capturing_content",
    "content_captured",
    "event",
    "mark",
    "span",
    "telemetry",
]

SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
CONTENT_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# The semantic conventions' advisory bucket boundaries for the two histograms.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# Backends that run in this process: their model calls are INTERNAL spans, not CLIENT ones.
_IN_PROCESS = frozenset({"local", "scripted"})

_content: ContextVar[bool | None] = ContextVar("lmdsl_trace_content", default=None)


@contextmanager
def capturing_content(enabled: bool = True) -> Iterator[None]:
    """Record prompts, replies, inputs and outputs on the spans made in this block (and in the
    threads and tasks it starts); `enabled=False` keeps them out whatever the environment says."""
    token = _content.set(enabled)
    try:
        yield
    finally:
        _content.reset(token)


def content_captured() -> bool:
    """Whether content goes on spans here: a `capturing_content` block's say, else the environment's."""
    chosen = _content.get()
    if chosen is not None:
        return chosen
    return os.environ.get(CONTENT_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def telemetry() -> Telemetry | None:
    """The instruments of the tracer provider the application set, or None (tracing off).
    Runs on every fuzzy call: two look-ups when OpenTelemetry is not in use."""
    traces = sys.modules.get("opentelemetry.trace")
    if traces is None:
        return None
    provider = getattr(traces, "_TRACER_PROVIDER", None)  # set by set_tracer_provider; None until then
    if provider is None:
        return None
    return _instruments(provider, traces)


@functools.lru_cache(maxsize=4)
def _instruments(provider: object, traces: ModuleType) -> Telemetry:
    """One tracer and the two histograms per tracer provider (a provider is set once per process;
    tests set several). The meter comes from the global meter provider, through the API's proxy
    when none is set yet, so metrics start when one is."""
    from opentelemetry import metrics  # the API: installed, since the application imported opentelemetry.trace

    tracer = provider.get_tracer("lmdsl", __version__, schema_url=SCHEMA_URL)  # type: ignore[attr-defined]
    meter = metrics.get_meter("lmdsl", __version__, schema_url=SCHEMA_URL)
    tokens = meter.create_histogram(
        "gen_ai.client.token.usage",
        unit="{token}",
        description="Number of input and output tokens used",
        explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
    )
    duration = meter.create_histogram(
        "gen_ai.client.operation.duration",
        unit="s",
        description="GenAI operation duration",
        explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
    )
    return Telemetry(tracer, traces, tokens, duration)


class _Invoke(Protocol):
    def __call__(
        self, inputs: Mapping[str, Any], feedback: tuple[Message, ...], backend: Backend | None
    ) -> CallRecord: ...


class _ProgramResult(Protocol):
    """What tracing reads of a program run (`lmdsl.program.ProgramResult`, which sits above)."""

    @property
    def output(self) -> Any: ...
    @property
    def trace(self) -> Sequence[Any]: ...
    @property
    def backtracks(self) -> int: ...


RunT = TypeVar("RunT", bound=_ProgramResult)


class _Traceable(Protocol):
    """What tracing reads of a fuzzy function (`lmdsl.calls.function.FuzzyFunction`, which sits above)."""

    @property
    def retries(self) -> int: ...
    @property
    def strategy(self) -> Any: ...
    @property
    def signature(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Telemetry:
    """A tracer and the GenAI histograms, and the spans lmdsl makes with them."""

    tracer: Tracer
    api: ModuleType
    token_usage: Histogram
    duration: Histogram

    def fuzzy_call(
        self,
        function: _Traceable,
        inputs: Mapping[str, Any],
        feedback: tuple[Message, ...],
        backend: Backend | None,
        invoke: _Invoke,
    ) -> CallRecord:
        """A fuzzy call as a span, its model calls as child spans (the backend it resolves is wrapped)."""
        name = function.signature.qualname
        attributes: dict[str, Any] = {
            "lmdsl.function": name,
            "lmdsl.strategy": function.strategy.name,
            "lmdsl.retries": function.retries,
        }
        content = content_captured()
        if content:
            attributes["lmdsl.inputs"] = _json(dict(inputs))
        current = self.tracer.start_span(f"fuzzy {name}", kind=self.api.SpanKind.INTERNAL, attributes=attributes)
        with (
            self.api.use_span(current, end_on_exit=True, record_exception=False, set_status_on_exception=False),
            intercepting(self._wrap),
        ):
            try:
                record = invoke(inputs, feedback, backend)
            except OutputError as error:
                _describe_attempts(current, error.attempts, content)
                _failed(current, error, content)
                raise
            except Exception as error:
                _failed(current, error, content)
                raise
            # a call a backtracking program replayed made no model call: its record's attempts are the first pass's
            if not (getattr(current, "attributes", None) or {}).get("lmdsl.replayed"):
                _describe_attempts(current, record.attempts, content)
                current.set_attribute("lmdsl.seconds", record.seconds)
            if content:
                current.set_attribute("lmdsl.output", _json(record.output))
                if record.reasoning is not None:
                    current.set_attribute("lmdsl.reasoning", record.reasoning)
        return record

    def _wrap(self, backend: Backend, function: str) -> Backend:
        """The interceptor a traced call puts in force: model calls become spans (once: a call inside
        another traced call, say in a check, finds its backend already wrapped)."""
        return backend if isinstance(backend, TracedBackend) else TracedBackend(backend, self)

    def program_run(self, program: str, inputs: Mapping[str, Any], execute: Callable[[], RunT]) -> RunT:
        """A program run (all its passes, when it backtracks) as an `invoke_workflow` span."""
        attributes: dict[str, Any] = {"gen_ai.operation.name": "invoke_workflow", "lmdsl.program": program}
        content = content_captured()
        if content:
            attributes["lmdsl.inputs"] = _json(dict(inputs))
        current = self.tracer.start_span(
            f"invoke_workflow {program}", kind=self.api.SpanKind.INTERNAL, attributes=attributes
        )
        with self.api.use_span(current, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                result = execute()
            except Exception as error:
                _failed(current, error, content)
                raise
            current.set_attributes({"lmdsl.backtracks": result.backtracks, "lmdsl.fuzzy_calls": len(result.trace)})
            if content:
                current.set_attribute("lmdsl.output", _json(result.output))
        return result


class TracedBackend:
    """A backend whose calls are `chat {model}` spans and feed the GenAI metrics."""

    cacheable = False  # already behind the cache (or deliberately not)

    def __init__(self, backend: Backend, telemetry: Telemetry) -> None:
        self.backend = backend
        self._telemetry = telemetry
        self.provider, self.model = _provider_and_model(backend.name)
        self._attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
        }

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def live(self) -> bool:
        return bool(getattr(self.backend, "live", True))

    def complete(self, request: Request) -> Completion:
        telemetry = self._telemetry
        api = telemetry.api
        attributes: dict[str, Any] = {
            **self._attributes,
            "gen_ai.request.temperature": request.temperature,
            "gen_ai.request.max_tokens": request.max_tokens,
            "gen_ai.output.type": "json" if request.json_schema else "text",
        }
        content = content_captured()
        if content:
            attributes.update(_input_messages(request.messages))
        kind = api.SpanKind.INTERNAL if self.provider in _IN_PROCESS else api.SpanKind.CLIENT
        current = telemetry.tracer.start_span(f"chat {self.model}", kind=kind, attributes=attributes)
        started = time.perf_counter()
        with api.use_span(current, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                completion = self.backend.complete(request)
            except Exception as error:
                _failed(current, error, content)
                telemetry.duration.record(
                    time.perf_counter() - started, {**self._attributes, "error.type": _error_type(error)}
                )
                raise
            current.set_attribute("gen_ai.response.finish_reasons", (completion.finish_reason,))
            current.set_attribute("lmdsl.cache_hit", completion.cached)
            if content:
                current.set_attribute("gen_ai.output.messages", _output_messages(completion))
            if not completion.cached:  # a reply from the cache reached no model and spent nothing
                usage = completion.usage
                current.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
                current.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
                telemetry.token_usage.record(usage.input_tokens, {**self._attributes, "gen_ai.token.type": "input"})
                telemetry.token_usage.record(usage.output_tokens, {**self._attributes, "gen_ai.token.type": "output"})
                telemetry.duration.record(time.perf_counter() - started, self._attributes)
        return completion


# -- spans for the layers above: program runs, evaluations, compiles --------------------------------------
@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """A span around the block, current inside it (so threads started with a copied context nest
    under it); None, and nothing else, when tracing is off. An error escaping the block is recorded."""
    found = telemetry()
    if found is None:
        yield None
        return
    current = found.tracer.start_span(name, kind=found.api.SpanKind.INTERNAL, attributes=attributes)
    with found.api.use_span(current, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            yield current
        except Exception as error:
            _failed(current, error, content_captured())
            raise


def annotate(target: Span | None, attributes: Mapping[str, Any]) -> None:
    """Set attributes on a span from `span()` (None: tracing is off, nothing to do)."""
    if target is not None:
        target.set_attributes({key: value for key, value in attributes.items() if value is not None})


def event(target: Span | None, name: str, attributes: Mapping[str, Any]) -> None:
    """Add an event to a span from `span()` (None: nothing to do)."""
    if target is not None:
        target.add_event(name, {key: value for key, value in attributes.items() if value is not None})


def mark(attribute: str, value: Any = True) -> None:
    """Set an attribute on the span in force (a fuzzy call's: a program marks the calls it
    replays or retries after a backtrack). Nothing when tracing is off."""
    found = telemetry()
    if found is not None:
        found.api.get_current_span().set_attribute(attribute, value)


def note(name: str, attributes: Mapping[str, Any], content: Mapping[str, Any] | None = None) -> None:
    """An event on the span in force; `content` attributes only where content is captured."""
    found = telemetry()
    if found is None:
        return
    found.api.get_current_span().add_event(name, {**attributes, **(content if content and content_captured() else {})})


class Scores:
    """Collects the example scores of one evaluation from its worker threads, for the mean on its span."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0.0
        self.count = 0

    def add(self, score: float) -> None:
        with self._lock:
            self.total += score
            self.count += 1


def evaluation_result(
    target: Span | None, metric: str, score: float, error_type: str | None, scores: Scores | None = None
) -> None:
    """A `gen_ai.evaluation.result` event on an example's span: the metric's name and its score (0-1)."""
    if target is None:
        return
    if scores is not None:
        scores.add(score)
    attributes: dict[str, Any] = {"gen_ai.evaluation.name": metric, "gen_ai.evaluation.score.value": score}
    if error_type is not None:
        attributes["error.type"] = error_type
    else:
        attributes["gen_ai.evaluation.score.label"] = "pass" if score >= 1.0 else "fail" if score <= 0.0 else "partial"
    target.add_event("gen_ai.evaluation.result", attributes)


# -- helpers ----------------------------------------------------------------------------------------------
def _provider_and_model(name: str) -> tuple[str, str]:
    """`openai:org/model@https://host/v1` -> (openai, org/model); `local` -> (local, local);
    `local:/models/x.gguf?engine=...` -> (local, x.gguf)."""
    provider, _, model = name.partition(":")
    if not model:
        return provider, provider
    head, at, server = model.rpartition("@")
    if at and "://" in server:
        model = head
    if provider == "local":
        model = model.split("?", 1)[0].rsplit("/", 1)[-1] or model
    return provider, model


def _describe_attempts(current: Span, attempts: Sequence[Attempt], content: bool) -> None:
    """A fuzzy call's attempts on its span: how many, which were rejected and by which check, what they spent."""
    lm_calls = input_tokens = output_tokens = 0
    failed_checks: list[str] = []
    for number, attempt in enumerate(attempts, 1):
        if not attempt.cached:
            lm_calls += 1
            input_tokens += attempt.usage.input_tokens
            output_tokens += attempt.usage.output_tokens
        if attempt.error is None:
            continue
        check = attempt.check
        attributes: dict[str, Any] = {"lmdsl.attempt": number, "lmdsl.finish_reason": attempt.finish_reason}
        if check is not None:
            attributes["lmdsl.check"] = check
            failed_checks.append(check)
        if content:
            attributes["lmdsl.error"] = attempt.error
        current.add_event("lmdsl.retry" if number < len(attempts) else "lmdsl.rejected", attributes)
    current.set_attributes(
        {
            "lmdsl.attempts": len(attempts),
            "lmdsl.lm_calls": lm_calls,
            "lmdsl.cache_hit": bool(attempts) and all(attempt.cached for attempt in attempts),
            "lmdsl.usage.input_tokens": input_tokens,
            "lmdsl.usage.output_tokens": output_tokens,
        }
    )
    if failed_checks:
        current.set_attribute("lmdsl.checks_failed", tuple(dict.fromkeys(failed_checks)))


def _error_type(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _failed(current: Span, error: BaseException, content: bool) -> None:
    """An error on a span: its type always; its message (which can quote a reply) only with content."""
    from_api = sys.modules["opentelemetry.trace"]
    kind = _error_type(error)
    current.set_attribute("error.type", kind)
    current.set_status(from_api.Status(from_api.StatusCode.ERROR, str(error) if content else kind))
    if content:
        current.record_exception(error)


def _json(value: Any) -> str:
    return to_json(value, serialize_unknown=True).decode()


def _input_messages(messages: Sequence[Message]) -> dict[str, str]:
    """`gen_ai.system_instructions` and `gen_ai.input.messages`, as the conventions' JSON."""
    system = [{"type": "text", "content": m.content} for m in messages if m.role == "system"]
    chat = [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in messages if m.role != "system"]
    found = {"gen_ai.input.messages": _json(chat)}
    if system:
        found["gen_ai.system_instructions"] = _json(system)
    return found


def _output_messages(completion: Completion) -> str:
    return _json(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": completion.text}],
                "finish_reason": completion.finish_reason,
            }
        ]
    )
