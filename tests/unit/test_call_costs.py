"""What a fuzzy call costs: an attempt is one LM call and its tokens unless the cache served it.

`CallRecord.spent` holds that rule; a function's usage, an optimizer's budget and an evaluation's
rows all count with it, so a call whose first attempt came from the cache and whose repair
reached the model costs each of them exactly one LM call and the repair's tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import lmdsl
from lmdsl.calls.records import CallRecord, Spent
from lmdsl.compiler.base import Budget
from lmdsl.lm.types import Attempt, Completion, Message, Request, Usage

REQUEST = Request((Message("user", "text: x"),))


def attempt(usage: Usage, *, cached: bool) -> Attempt:
    return Attempt(REQUEST, "{}", None, usage, "stop", cached)


def record(*attempts: Attempt) -> CallRecord:
    return CallRecord("mood", "scripted", {"text": "x"}, "pos", None, attempts, 0.01)


def test_a_record_spends_the_calls_and_tokens_of_its_uncached_attempts_only() -> None:
    mixed = record(
        attempt(Usage(10, 3), cached=False), attempt(Usage(7, 2), cached=True), attempt(Usage(12, 4), cached=False)
    )
    assert mixed.spent == Spent(2, Usage(22, 7))
    assert mixed.usage == Usage(22, 7)
    assert record(attempt(Usage(7, 2), cached=True)).spent == Spent(0, Usage(0, 0))
    assert record().spent == Spent(0, Usage(0, 0))  # a call that made no attempt costs nothing


def test_costs_add_up() -> None:
    assert Spent(1, Usage(10, 3)) + Spent(2, Usage(5, 1)) == Spent(3, Usage(15, 4))
    assert Spent() == Spent(0, Usage(0, 0))


@lmdsl.fuzzy
def mood(text: str) -> str:
    """Say pos or neg."""


def half_cached() -> lmdsl.ScriptedModel:
    """An invalid reply served as if from the cache (no model ran), then a valid one from the model."""
    return lmdsl.ScriptedModel(
        [Completion("not json", Usage(7, 2), cached=True), Completion('{"mood": "pos"}', Usage(10, 3))]
    )


@pytest.fixture(autouse=True)
def _fresh_usage() -> Iterator[None]:
    mood._usage.reset()
    yield
    mood._usage.reset()


def test_a_functions_usage_counts_the_uncached_attempt_only() -> None:
    with lmdsl.using(model=half_cached()):
        assert mood("x") == "pos"
    assert mood.usage == lmdsl.FunctionUsage(calls=1, cached_calls=0, failures=0, lm_calls=1, usage=Usage(10, 3))


def test_a_call_served_wholly_from_the_cache_counts_as_a_cached_call() -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel([Completion('{"mood": "pos"}', Usage(10, 3), cached=True)])):
        mood("x")
    assert mood.usage == lmdsl.FunctionUsage(calls=1, cached_calls=1, failures=0, lm_calls=0, usage=Usage(0, 0))


def test_a_budget_counts_the_uncached_attempt_only() -> None:
    with lmdsl.using(model=half_cached()), Budget().counting() as budget:
        mood("x")
    assert (budget.lm_calls, budget.tokens) == (1, 13)


def test_an_evaluation_row_counts_the_uncached_attempt_only() -> None:
    def right(example: lmdsl.Example, prediction: str) -> bool:
        return bool(prediction == example.label)

    with lmdsl.using(model=half_cached()):
        result = lmdsl.evaluate(mood, [lmdsl.Example(text="x", label="pos")], right, threads=1, progress=False)
    [row] = result.rows
    assert (row.lm_calls, row.input_tokens, row.output_tokens) == (1, 10, 3)
    assert (result.lm_calls, result.input_tokens, result.output_tokens) == (1, 10, 3)
