"""`fn.map` on threads and `fn.acall` from asyncio: order, per-item errors, configuration and tracing.

`ScriptedModel` holds its lock while it computes a reply, so a reply function that
sleeps would serialize every call; the concurrency tests use `SleepyModel`, a
minimal lock-free scripted backend with the same `name` + `complete` protocol.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

import pytest

import lmdsl
from lmdsl.lm.types import Completion, Request


@lmdsl.fuzzy
def shout(text: str) -> str:
    """Repeat the text in capitals."""


@lmdsl.fuzzy
def count(text: str) -> int:
    """Count the words."""


def the_input(request: Request) -> str:
    """The call's input text (the first turn after the prefix, whatever retries follow)."""
    return request.messages[request.prefix_length].content.removeprefix("text: ")


WAIT = 60.0  # seconds an event-based concurrency test waits before it fails; never reached when it passes


class SleepyModel:
    """Answers from the input text after a delay chosen per input; measures concurrency."""

    cacheable = False
    live = False  # a test double: lmdsl's pytest plugin lets it run where live calls are refused

    def __init__(
        self, delay: Callable[[str], float], *, name: str = "sleepy", on_finish: Callable[[str], None] | None = None
    ) -> None:
        self.name = name
        self.delay = delay
        self.on_finish = on_finish
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.finished: list[str] = []
        self.requests: list[Request] = []

    def complete(self, request: Request) -> Completion:
        text = the_input(request)
        with self.lock:
            self.requests.append(request)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay(text))
        finally:
            with self.lock:
                self.active -= 1
                self.finished.append(text)
            if self.on_finish is not None:
                self.on_finish(text)
        if text == "bad":
            return Completion("this is not JSON")
        (key,) = json.loads(request.json_schema or "{}")["properties"]  # the function's name
        return Completion(json.dumps({key: len(text.split()) if key == "count" else text.upper()}))


# -- map ------------------------------------------------------------------------------------


def test_map_returns_outcomes_in_input_order_whatever_the_completion_order() -> None:
    # each call waits until the next item's call has finished, so they finish last to first;
    # that can only happen with all six running at once (a wrong order would time out)
    done = {f"item {i}": threading.Event() for i in range(6)}

    def finish_after_the_next(text: str) -> float:
        number = int(text.split()[1])
        if number < 5:
            assert done[f"item {number + 1}"].wait(WAIT), "the next call never finished: not concurrent"
        return 0.0

    model = SleepyModel(finish_after_the_next, on_finish=lambda text: done[text].set())
    items = [{"text": f"item {i}"} for i in range(6)]
    with lmdsl.using(model=model):
        outcomes = shout.map(items, threads=6)
    assert all(isinstance(o, lmdsl.Outcome) for o in outcomes)
    assert [o.value for o in outcomes] == [f"ITEM {i}" for i in range(6)]
    assert all(o.ok and o.error is None for o in outcomes)
    assert [o.unwrap() for o in outcomes] == [o.value for o in outcomes]
    assert model.finished == [f"item {i}" for i in reversed(range(6))]
    assert model.peak == 6


def test_map_on_one_thread_runs_in_order() -> None:
    model = SleepyModel(lambda text: 0.0)
    with lmdsl.using(model=model):
        outcomes = shout.map(iter([{"text": "a"}, {"text": "b"}, {"text": "c"}]), threads=1)
    assert [o.unwrap() for o in outcomes] == ["A", "B", "C"]
    assert model.finished == ["a", "b", "c"] and model.peak == 1


def test_a_failing_item_holds_its_error_while_the_others_succeed() -> None:
    model = SleepyModel(lambda text: 0.002)
    items: list[dict[str, object]] = [{"text": "one"}, {"text": "bad"}, {"txt": "typo"}, {}, {"text": "two"}]
    with lmdsl.using(model=model):
        outcomes = shout.map(items, threads=3)
    assert [o.ok for o in outcomes] == [True, False, False, False, True]
    assert [outcomes[0].value, outcomes[4].value] == ["ONE", "TWO"]
    bad, typo, missing = outcomes[1], outcomes[2], outcomes[3]
    assert isinstance(bad.error, lmdsl.OutputError) and bad.value is None
    assert len(bad.error.attempts) == 3  # retries=2, each fed back
    assert isinstance(typo.error, lmdsl.InputError) and typo.error.field == "txt"
    assert "unknown input field 'txt'" in str(typo.error)
    assert isinstance(missing.error, lmdsl.InputError) and missing.error.field == "text"
    with pytest.raises(lmdsl.OutputError) as caught:
        bad.unwrap()
    assert caught.value is bad.error
    # inputs that do not fit never reach the model
    assert sorted(the_input(r) for r in model.requests) == ["bad", "bad", "bad", "one", "two"]


def test_a_using_block_around_map_reaches_the_worker_threads() -> None:
    pinned = lmdsl.ScriptedModel([], name="pinned")  # fails if it is ever asked

    @lmdsl.fuzzy(model=pinned)
    def echo(text: str) -> str:
        """Repeat the text."""

    outer = lmdsl.ScriptedModel(lambda request: {"echo": "outer"}, name="outer")
    inner = lmdsl.ScriptedModel(lambda request: {"echo": "inner " + the_input(request)}, name="inner")
    items = [{"text": str(i)} for i in range(8)]
    with lmdsl.using(model=outer), lmdsl.using(model=inner, temperature=0.4):
        outcomes = echo.map(items, threads=4)
    assert [o.unwrap() for o in outcomes] == [f"inner {i}" for i in range(8)]
    assert len(inner.requests) == 8 and not outer.requests and not pinned.requests
    assert {r.temperature for r in inner.requests} == {0.4}
    assert {record.model for record in lmdsl.history()} == {"inner"}


def test_capture_around_map_collects_every_record() -> None:
    model = SleepyModel(lambda text: 0.005)
    items = [{"text": f"t{i}"} for i in range(6)] + [{"text": "bad"}]
    with lmdsl.using(model=model), lmdsl.capture() as calls:
        outcomes = shout.map(items, threads=3)
    assert len(outcomes) == len(calls) == 7
    assert sorted(c.inputs["text"] for c in calls) == sorted(i["text"] for i in items)
    assert {c.function for c in calls} == {"shout"}
    failed = [c for c in calls if c.error is not None]
    assert [c.inputs["text"] for c in failed] == ["bad"]
    with lmdsl.using(model=model):
        shout("after")
    assert len(calls) == 7  # the block is over


@pytest.mark.parametrize("threads", [1, 3])
def test_map_never_runs_more_backend_calls_at_once_than_threads(threads: int) -> None:
    together = threading.Barrier(threads, timeout=WAIT)  # the first `threads` calls meet: they do run at once

    def first_calls_meet(text: str) -> float:
        if int(text[1:]) < threads:
            together.wait()
        return 0.0

    model = SleepyModel(first_calls_meet)
    with lmdsl.using(model=model):
        outcomes = shout.map([{"text": f"x{i}"} for i in range(9)], threads=threads)
    assert all(o.ok for o in outcomes)
    assert model.peak == threads


@pytest.mark.parametrize("threads", [0, -2])
def test_map_needs_at_least_one_thread(threads: int) -> None:
    with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
        shout.map([{"text": "a"}], threads=threads)
    with pytest.raises(ValueError, match="threads must be"):
        shout.map([], threads=threads)


# -- acall ----------------------------------------------------------------------------------


def test_acall_returns_the_typed_value() -> None:
    async def main() -> tuple[int, str]:
        return await count.acall("one two three"), await shout.acall(text="hi")

    with lmdsl.using(model=SleepyModel(lambda text: 0.0)):
        words, loud = asyncio.run(main())
    assert words == 3 and isinstance(words, int)
    assert loud == "HI"


def test_acall_runs_calls_concurrently_under_gather() -> None:
    together = threading.Barrier(4, timeout=WAIT)  # only four calls running at once get past it

    def meet(text: str) -> float:
        together.wait()
        return 0.0

    model = SleepyModel(meet)

    async def main() -> list[str]:
        return await asyncio.gather(*(shout.acall(f"call {i}") for i in range(4)))

    with lmdsl.using(model=model):
        results = asyncio.run(main())
    assert results == [f"CALL {i}" for i in range(4)]
    assert model.peak == 4


def test_acall_sees_the_configuration_and_capture_of_the_calling_task() -> None:
    model = lmdsl.ScriptedModel([{"shout": "A"}, {"shout": "B"}])

    async def main() -> list[lmdsl.CallRecord]:
        with lmdsl.using(model=model, temperature=0.3), lmdsl.capture() as calls:
            assert await shout.acall("a") == "A"
            assert await shout.acall("b") == "B"
        return calls

    calls = asyncio.run(main())
    assert [c.inputs["text"] for c in calls] == ["a", "b"]
    assert [c.output for c in calls] == ["A", "B"]
    assert [r.temperature for r in model.requests] == [0.3, 0.3]


def test_concurrent_tasks_keep_their_own_models() -> None:
    a = lmdsl.ScriptedModel(lambda request: {"shout": "from a"}, name="a")
    b = lmdsl.ScriptedModel(lambda request: {"shout": "from b"}, name="b")
    outer = lmdsl.ScriptedModel(lambda request: {"shout": "from outer"}, name="outer")

    async def task(model: lmdsl.ScriptedModel, entered: asyncio.Event, other: asyncio.Event) -> list[str]:
        with lmdsl.using(model=model):
            entered.set()
            await other.wait()  # both tasks are now inside their own `using` block
            first = await shout.acall("x")
            await asyncio.sleep(0)
            return [first, await shout.acall("y")]

    async def main() -> tuple[list[list[str]], str]:
        with lmdsl.using(model=outer):
            in_a, in_b = asyncio.Event(), asyncio.Event()
            results = await asyncio.gather(task(a, in_a, in_b), task(b, in_b, in_a))
            return list(results), await shout.acall("z")

    (from_a, from_b), from_outer = asyncio.run(main())
    assert from_a == ["from a", "from a"] and from_b == ["from b", "from b"]
    assert from_outer == "from outer"
    assert (len(a.requests), len(b.requests), len(outer.requests)) == (2, 2, 1)
