"""A strategy's own sub-calls run on its call's model, passed in; code they run keeps its own models."""

from __future__ import annotations

from typing import Any

import lmdsl
from lmdsl import program_of_thought, react
from lmdsl.lm.types import Request
from tests.unit.test_react import step


def agent_replies(request: Request) -> dict[str, Any]:
    """The react step (spell, then done once the trajectory has the spelling), then the answer."""
    if '"action"' not in (request.json_schema or ""):
        return {"answer": "c-a-t"}
    spelled_already = "c-a-t" in request.messages[-1].content
    return step("done", "done") if spelled_already else step("spell it", "spelled", word="cat")


speller = lmdsl.ScriptedModel(lambda request: {"spell": "c-a-t"}, name="speller")
agent = lmdsl.ScriptedModel(agent_replies, name="agent")
coder = lmdsl.ScriptedModel(lambda request: {"code": "result = 6 * 7"}, name="coder")


@lmdsl.fuzzy(model=speller)
def spell(word: str) -> str:
    """Spell the word letter by letter, joined by dashes."""


def spelled(word: str) -> str:
    """The word spelled out."""
    return spell(word)


@lmdsl.fuzzy(model=agent, strategy=react([spelled], max_steps=2))
def answer(question: str) -> str:
    """Answer the question."""


@lmdsl.fuzzy(model=coder, strategy=program_of_thought())
def product(a: int, b: int) -> int:
    """Multiply the numbers."""


def test_react_runs_its_steps_on_its_model_and_a_tool_keeps_its_own() -> None:
    before = len(agent.requests), len(speller.requests)
    with lmdsl.using(cache=False):
        assert answer("How is cat spelled?") == "c-a-t"
    assert len(agent.requests) - before[0] == 3  # two steps and the answer, on the react function's model
    assert len(speller.requests) - before[1] == 1  # the tool's fuzzy function on its own pinned model
    assert speller.requests[-1].messages[-1].content == "word: cat"


def test_program_of_thought_writes_its_code_on_its_model() -> None:
    before = len(coder.requests)
    with lmdsl.using(cache=False):
        assert product(6, 7) == 42
    assert len(coder.requests) - before == 1
