"""Testing an LM program in CI: offline, deterministic, and whatever the model says.

Run it with `.venv/bin/python -m pytest examples/test_support_program.py` (the project's own
suite runs it too, from `tests/test_examples.py`). Four kinds of test, one of each:

1. **A cassette** (`@pytest.mark.lmdsl_cassette`): the test ran once against the embedded
   model with `pytest --lmdsl-record=all`, which wrote every request and reply to
   `cassettes/test_support_program/<test>.json`; every other run answers from that file and
   runs no model. A prompt that changes (an edited docstring, a new demo) no longer matches:
   the test fails with a diff of the message that changed, until it is recorded again.
2. **The live-call guard**: with `lmdsl_allow_model_requests = false` in the pytest
   configuration (this project sets it in `pyproject.toml`), a test that reaches a real model
   without a cassette fails, naming the test and the fuzzy function.
3. **A property test** (hypothesis): `drawn_model` answers every fuzzy function of the program
   with values drawn from its return type, so the program's own Python, the glue between the
   calls and its `require` conditions, is tested against every output the model could give.
4. **A prompt snapshot** (inline-snapshot): the exact prompt a fuzzy function sends, so an
   edit that changes it shows up as a reviewed diff.
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inline_snapshot import snapshot
from pydantic import BaseModel, Field

import lmdsl
from lmdsl.testing import drawn_model, inputs, outputs, prompt_text

Team = Literal["refund", "delivery", "account", "technical"]


@lmdsl.fuzzy
def route(message: str) -> Team:
    """Decide which team should handle a customer-support message."""


class Reply(BaseModel):
    greeting: str = Field(description="one short sentence")
    next_step: str = Field(description="what the customer should do next")


@lmdsl.fuzzy
def draft_reply(message: str, team: Team) -> Reply:
    """Draft a reply to the customer on behalf of the team."""


@lmdsl.program
def handle(message: str) -> tuple[Team, str]:
    """Route the message, then draft the team's reply; the reply must say what to do next."""
    team = route(message)
    reply = draft_reply(message, team)
    lmdsl.require(reply.next_step.strip() != "", "Say what the customer should do next.")
    return team, f"{reply.greeting} {reply.next_step}"


# 1. Recorded once from the embedded model; replayed from the cassette ever after.
@pytest.mark.lmdsl_cassette
def test_routing_on_the_embedded_model() -> None:
    with lmdsl.using(model="local"):
        assert route("Please refund the duplicate charge on my card.") == "refund"


# 3. For any outputs the model could give, `handle` returns a team and a text, or fails with
#    one of lmdsl's typed errors: never a KeyError or an AttributeError from the glue.
@settings(max_examples=50, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), inputs(handle))
def test_handle_survives_any_model_output(data: st.DataObject, arguments: dict[str, str]) -> None:
    with lmdsl.using(model=drawn_model(data, handle)):
        try:
            team, text = handle(**arguments)
        except lmdsl.AssertionFailed:
            return  # the model kept leaving next_step empty: the program's own check said no
    assert team in ("refund", "delivery", "account", "technical")
    assert isinstance(text, str)


# Every value `outputs` draws is a valid `Reply`: what the property test above feeds the program.
@settings(max_examples=30, derandomize=True)
@given(outputs(draft_reply))
def test_drawn_replies_are_replies(reply: Reply) -> None:
    assert isinstance(reply, Reply)


# 4. The exact prompt: edit the docstring or the types, and this diff is what reviewers see.
def test_the_routing_prompt() -> None:
    assert prompt_text(route, {"message": "Where is my refund?"}) == snapshot("""\
=== system ===
Decide which team should handle a customer-support message.

Inputs:
- message (str)

Reply with one JSON object of this shape.
{"route": "refund" | "delivery" | "account" | "technical"}

=== user ===
message: Where is my refund?\
""")
