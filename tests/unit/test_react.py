"""The react strategy on the scripted backend: typed tool calls, trajectory, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

import lmdsl
from lmdsl import react

calls: list[tuple[str, Any]] = []


def lookup(city: str) -> str:
    """Look up facts about a city."""
    calls.append(("lookup", city))
    return {"Paris": "Paris has 2.1 million people."}.get(city, "unknown city")


def add(a: int, b: int = 0) -> int:
    """Add two integers."""
    calls.append(("add", (a, b)))
    return a + b


def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


@lmdsl.fuzzy(strategy=react([lookup, add, explode], max_steps=3))
def population(city: str) -> int:
    """How many people live in the city?"""


def step(thought: str, tool: str, **args: Any) -> dict[str, Any]:
    action: dict[str, Any] = {"tool": tool}
    if tool != "done":
        action["args"] = args
    return {"thought": thought, "action": action}


def setup_function() -> None:
    calls.clear()


def test_tools_are_called_with_typed_arguments_and_the_trajectory_is_kept() -> None:
    model = lmdsl.ScriptedModel(
        [
            step("look it up", "lookup", city="Paris"),
            step("add a little", "add", a="2100000", b=1),
            step("done", "done"),
            {"population": 2100001},
        ]
    )
    with lmdsl.using(model=model):
        record = population.invoke({"city": "Paris"})
    assert record.output == 2100001
    assert calls == [("lookup", "Paris"), ("add", (2100000, 1))]  # "2100000" validated into an int
    trajectory = record.details["trajectory"]
    assert [t["tool"] for t in trajectory] == ["lookup", "add"]
    assert trajectory[0]["observation"] == "Paris has 2.1 million people."
    assert trajectory[1]["observation"] == "2100001"
    final_prompt = model.requests[-1].messages[-1].content
    assert "Observation 1: Paris has 2.1 million people." in final_prompt
    assert "Action 2: add(" in final_prompt
    assert len(record.attempts) == 4


def test_the_model_sees_each_tool_signature_and_a_constrained_action() -> None:
    model = lmdsl.ScriptedModel([step("no need", "done"), {"population": 1}])
    with lmdsl.using(model=model):
        population("Nowhere")
    system = model.requests[0].messages[0].content
    assert "- lookup(city: str) - Look up facts about a city." in system
    assert "- add(a: int, b: int) - Add two integers." in system
    schema = json.loads(model.requests[0].json_schema or "{}")
    assert schema["properties"]["action"]["anyOf"]
    assert calls == []


def test_a_failing_tool_becomes_an_observation_not_a_crash() -> None:
    model = lmdsl.ScriptedModel([step("try", "explode", reason="boom"), step("give up", "done"), {"population": 0}])
    with lmdsl.using(model=model):
        record = population.invoke({"city": "x"})
    assert record.details["trajectory"][0]["observation"] == "error: RuntimeError: boom"


def test_steps_stop_at_max_steps() -> None:
    model = lmdsl.ScriptedModel([step("again", "lookup", city="Paris")] * 3 + [{"population": 5}])
    with lmdsl.using(model=model):
        assert population("Paris") == 5
    assert len(calls) == 3


def test_an_unknown_tool_name_is_invalid_output_and_retried() -> None:
    model = lmdsl.ScriptedModel([step("?", "delete_everything"), step("ok", "done"), {"population": 2}])
    with lmdsl.using(model=model):
        record = population.invoke({"city": "x"})
    assert record.output == 2 and calls == []
    assert record.attempts[0].error is not None


def test_tools_must_be_annotated() -> None:
    def bare(city):  # type: ignore[no-untyped-def]
        return city

    def no_return(city: str):  # type: ignore[no-untyped-def]
        return city

    with pytest.raises(lmdsl.SignatureError, match="tool bare: parameter 'city' has no type annotation"):
        react([bare])  # type: ignore[lmdsl-wiring]
    with pytest.raises(lmdsl.SignatureError, match="tool no_return: annotate its return type"):
        react([no_return])  # type: ignore[lmdsl-wiring]
    with pytest.raises(lmdsl.SignatureError, match="at least one tool"):
        react([])


def test_derived_calls_follow_the_model_of_the_call() -> None:
    pinned = lmdsl.ScriptedModel([step("done", "done"), {"pinned_population": 3}])

    @lmdsl.fuzzy(model=pinned, strategy=react([lookup]))
    def pinned_population(city: str) -> int:
        """How many people live in the city?"""

    assert pinned_population("x") == 3
    assert len(pinned.requests) == 2
