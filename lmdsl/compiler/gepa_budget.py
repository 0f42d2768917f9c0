"""GEPA's budgets: the LM calls and tokens metered where calls reach the model, and the metric calls
of bootstrapping counted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lmdsl.compiler.base import Budget, BudgetExhausted
from lmdsl.data import metric_takes_trace
from lmdsl.lm.types import Backend, Completion, Request
from lmdsl.scores import Metric


class Stop(Exception):
    """The metric budget cannot pay for the next evaluation, or the model budget ran out in one."""


class Meter(Budget):
    """A budget enforced where calls reach the model: a call that would pass `max_lm_calls`
    (counting those under way) or start after `max_tokens` are spent is refused with
    `BudgetExhausted`, so the count never passes the limit. Counts from earlier runs of a
    resumed compile are carried in."""

    def __init__(self, max_lm_calls: int | None, max_tokens: int | None, spent: Mapping[str, float]) -> None:
        super().__init__(max_lm_calls, max_tokens)
        self.lm_calls = int(spent.get("lm_calls", 0))
        self.tokens = int(spent.get("tokens", 0))
        self.cached_calls = int(spent.get("cached_calls", 0))
        self._under_way = 0
        self.refused = False

    @property
    def exhausted(self) -> bool:
        return (self.max_lm_calls is not None and self.lm_calls + self._under_way >= self.max_lm_calls) or (
            self.max_tokens is not None and self.tokens >= self.max_tokens
        )

    def admit(self) -> None:
        with self._lock:
            if self.exhausted:
                self.refused = True
                raise BudgetExhausted(
                    f"GEPA's budget is spent: {self.lm_calls} LM calls (max {self.max_lm_calls}), "
                    f"{self.tokens} tokens (max {self.max_tokens})"
                )
            self._under_way += 1

    def settle(self, completion: Completion | None) -> None:
        with self._lock:
            self._under_way -= 1
            if completion is None:
                return
            if completion.cached:
                self.cached_calls += 1
            else:
                self.lm_calls += 1
                self.tokens += completion.usage.total_tokens

    def wrap(self, backend: Backend, function: str) -> Backend:
        return Metered(backend, self)


class Metered:
    """A backend behind the meter (see `Meter`)."""

    def __init__(self, backend: Backend, meter: Meter) -> None:
        self.backend = backend
        self._meter = meter
        self.cacheable = getattr(backend, "cacheable", True)
        self.live = getattr(backend, "live", True)

    @property
    def name(self) -> str:
        return self.backend.name

    def complete(self, request: Request) -> Completion:
        self._meter.admit()
        completion = None
        try:
            completion = self.backend.complete(request)
        finally:
            self._meter.settle(completion)
        return completion


def counting(metric: Metric, count: Callable[[int], None]) -> Metric:
    """`metric`, each call counted (bootstrapping calls the metric directly, not through an evaluation)."""
    takes_trace = metric_takes_trace(metric)

    def counted(*args: Any) -> Any:
        count(1)
        return metric(*args[:3]) if takes_trace else metric(*args[:2])

    return counted
