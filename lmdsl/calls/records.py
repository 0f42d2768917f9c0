"""What each fuzzy call did: the record of one call, per-function usage, and where records go."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lmdsl.lm.types import Attempt, Message, Usage


@dataclass(frozen=True, slots=True)
class Spent:
    """What LM calls cost: how many reached a model, and their tokens. A reply from the cache costs nothing."""

    lm_calls: int = 0
    usage: Usage = Usage()

    def __add__(self, other: Spent) -> Spent:
        return Spent(self.lm_calls + other.lm_calls, self.usage + other.usage)


_NOTHING = Spent()


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One fuzzy call: its inputs, typed output (None if it failed), reasoning and every attempt.

    `details` holds what a strategy adds: samples and rewards, a tool trajectory, code.
    """

    function: str
    model: str
    inputs: Mapping[str, Any]
    output: Any
    reasoning: str | None
    attempts: tuple[Attempt, ...]
    seconds: float
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spent(self) -> Spent:
        """What this call cost: each attempt is one LM call and its tokens, unless the cache served it.
        The one place that rule lives: usage counters, budgets and evaluation rows all read it."""
        attempts = self.attempts
        if len(attempts) == 1:  # the usual call: one attempt, its usage object reused (this runs on every call)
            only = attempts[0]
            return _NOTHING if only.cached else Spent(1, only.usage)
        calls = input_tokens = output_tokens = 0
        for attempt in attempts:
            if not attempt.cached:
                calls += 1
                input_tokens += attempt.usage.input_tokens
                output_tokens += attempt.usage.output_tokens
        return Spent(calls, Usage(input_tokens, output_tokens))

    @property
    def usage(self) -> Usage:
        """The tokens this call spent (cached attempts cost none)."""
        return self.spent.usage

    @property
    def cached(self) -> bool:
        return all(attempt.cached for attempt in self.attempts)

    @property
    def messages(self) -> tuple[Message, ...]:
        """The exact messages of the last request, the reply excluded."""
        return self.attempts[-1].request.messages if self.attempts else ()

    def format(self) -> str:
        """The prompt and reply of each attempt, as plain text for a terminal."""
        lines = [f"── {self.function} on {self.model} ({self.seconds * 1000:.1f} ms, {len(self.attempts)} attempt(s))"]
        for number, attempt in enumerate(self.attempts, 1):
            lines.append(f"attempt {number}{' (cached)' if attempt.cached else ''}:")
            for message in attempt.request.messages:
                lines.append(f"[{message.role}]\n{message.content}")
            lines.append(f"[reply, {attempt.finish_reason}]\n{attempt.text}")
            if attempt.error:
                lines.append(f"[invalid] {attempt.error}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class FunctionUsage:
    """Totals for one fuzzy function in this process. Cached replies cost no tokens."""

    calls: int = 0
    cached_calls: int = 0
    failures: int = 0
    lm_calls: int = 0
    usage: Usage = Usage()


class UsageCounter:
    """Thread-safe running totals behind `FuzzyFunction.usage`: plain integers on the call
    path, a `FunctionUsage` only when someone reads them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def add(self, record: CallRecord) -> None:
        spent = record.spent
        with self._lock:
            self._calls += 1
            self._cached_calls += spent.lm_calls == 0
            self._failures += record.error is not None
            self._lm_calls += spent.lm_calls
            self._input_tokens += spent.usage.input_tokens
            self._output_tokens += spent.usage.output_tokens

    @property
    def totals(self) -> FunctionUsage:
        with self._lock:
            return FunctionUsage(
                self._calls,
                self._cached_calls,
                self._failures,
                self._lm_calls,
                Usage(self._input_tokens, self._output_tokens),
            )

    def reset(self) -> None:
        with self._lock:
            self._calls = self._cached_calls = self._failures = self._lm_calls = 0
            self._input_tokens = self._output_tokens = 0


class History:
    """The last few call records of the process, newest last, for inspecting exact prompts."""

    def __init__(self, size: int) -> None:
        self._records: deque[CallRecord] = deque(maxlen=size)

    def add(self, record: CallRecord) -> None:
        self._records.append(record)

    def last(self, n: int | None = None) -> list[CallRecord]:
        records = list(self._records)
        return records if n is None else records[-n:] if n > 0 else []

    def clear(self) -> None:
        self._records.clear()


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What an observer asks of the next fuzzy call: replay a recorded result instead of
    calling the model, or add feedback turns after the input (used by backtracking)."""

    replay: CallRecord | None = None
    feedback: tuple[Message, ...] = ()


class CallObserver:
    """Sees every fuzzy call made in its context; programs use one to trace and backtrack.

    `function` is the `FuzzyFunction` being called (typed loosely: this module sits below it).
    """

    def plan(self, function: Any, inputs: Mapping[str, Any]) -> CallPlan | None:
        """Asked before each call; None lets the call run as usual."""
        return None

    def record(self, function: Any, record: CallRecord) -> None:
        """Told after each call that ran (not a replayed one), in the calling thread or task."""

    def retrieved(self, record: Any) -> None:
        """Told after each retrieval (`lmdsl.retrieval.RetrievalRecord`: typed loosely, it sits above)."""


_observers: ContextVar[tuple[CallObserver, ...]] = ContextVar("lmdsl_observers", default=())


# The observers in force here; the context variable's own getter, so a call pays no Python frame for it.
observers: Callable[[], tuple[CallObserver, ...]] = _observers.get


ObserverT = TypeVar("ObserverT", bound=CallObserver)


@contextmanager
def observing(observer: ObserverT) -> Iterator[ObserverT]:
    """Let `observer` see the fuzzy calls made in this block (and in threads that copy the context)."""
    token = _observers.set((*_observers.get(), observer))
    try:
        yield observer
    finally:
        _observers.reset(token)


class _Collector(CallObserver):
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def record(self, function: Any, record: CallRecord) -> None:
        self.records.append(record)


@contextmanager
def capture() -> Iterator[list[CallRecord]]:
    """Collect the records of every fuzzy call made in this block (in this thread or task)."""
    with observing(_Collector()) as collector:
        yield collector.records
