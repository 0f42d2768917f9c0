"""Prompt snapshots: `prompt_text` is exactly what a call sends, and inline-snapshot keeps it in
view, so an edit of a docstring, a type or a demonstration shows up as a reviewed diff.

Under pytest, inline-snapshot only compares unless asked to write: in CI (the `CI` variable)
it runs as `--inline-snapshot=disable`, where `snapshot(x)` is just `x`; outside a terminal it
reports a mismatch without touching the file. `pytest --inline-snapshot=fix` (or `create`,
`review`) rewrites the values after a deliberate change.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from inline_snapshot import snapshot
from pydantic import BaseModel, Field

import lmdsl
from lmdsl.errors import InputError
from lmdsl.params import Demo, Params
from lmdsl.testing import prompt_text, render_messages


class Ticket(BaseModel):
    category: Literal["billing", "tech"] = Field(description="the team that handles it")
    urgency: int = Field(ge=1, le=5)


@lmdsl.fuzzy
def classify(message: str, channel: Literal["email", "chat"] = "email", history: tuple[str, ...] = ()) -> Ticket:
    """Classify a support message.

    Args:
        message: the customer's message
        history: earlier messages, oldest first
    """


@lmdsl.fuzzy(strategy=lmdsl.chain_of_thought)
def estimate(question: str, facts: dict[str, int]) -> Annotated[float, Field(description="the estimate")]:
    """Estimate the answer from the facts."""


DEMO = Demo({"message": "I was charged twice", "channel": "chat"}, Ticket(category="billing", urgency=4))


def test_the_prefix_alone() -> None:
    assert prompt_text(classify) == snapshot("""\
=== system ===
Classify a support message.

Inputs:
- message (str) - the customer's message
- channel (Literal['email', 'chat'])
- history (tuple[str, ...]) - earlier messages, oldest first

Reply with one JSON object of this shape.
{
  "category": "billing" | "tech", // the team that handles it
  "urgency": integer
}\
""")


def test_a_call_with_its_inputs_and_the_defaults_filled_in() -> None:
    assert prompt_text(
        classify, {"message": "The app crashes on start", "history": ["hi", "still broken"]}
    ) == snapshot(
        """\
=== system ===
Classify a support message.

Inputs:
- message (str) - the customer's message
- channel (Literal['email', 'chat'])
- history (tuple[str, ...]) - earlier messages, oldest first

Reply with one JSON object of this shape.
{
  "category": "billing" | "tech", // the team that handles it
  "urgency": integer
}

=== user ===
message: The app crashes on start
channel: email
history: ["hi","still broken"]\
"""
    )


def test_demonstrations_in_the_parameters_given() -> None:
    params = Params("Classify a support message by its team.", (DEMO,))
    assert prompt_text(classify, {"message": "Where is my invoice?"}, params=params) == snapshot("""\
=== system ===
Classify a support message by its team.

Inputs:
- message (str) - the customer's message
- channel (Literal['email', 'chat'])
- history (tuple[str, ...]) - earlier messages, oldest first

Reply with one JSON object of this shape.
{
  "category": "billing" | "tech", // the team that handles it
  "urgency": integer
}

=== user ===
message: I was charged twice
channel: chat
history: []

=== assistant ===
{"category": "billing", "urgency": 4}

=== user ===
message: Where is my invoice?
channel: email
history: []\
""")


def test_a_chain_of_thought_function_asks_for_its_reasoning() -> None:
    assert prompt_text(estimate, {"question": "How many legs?", "facts": {"cats": 2, "legs per cat": 4}}) == snapshot(
        """\
=== system ===
Estimate the answer from the facts.

Inputs:
- question (str)
- facts (dict[str, int])

Reply with one JSON object of this shape. Output: the estimate.
First think step by step in "reasoning", then give the answer.
{"reasoning": string, "estimate": number}

=== user ===
question: How many legs?
facts: {"cats":2,"legs per cat":4}\
"""
    )


def test_the_text_is_the_messages_a_call_really_sends() -> None:
    model = lmdsl.ScriptedModel(['{"category": "tech", "urgency": 2}'])
    values = {"message": "The app crashes", "channel": "chat"}
    with lmdsl.using(model=model):
        classify(**values)  # type: ignore[arg-type]
    assert prompt_text(classify, values) == render_messages(model.requests[0].messages)


def test_the_parameters_in_force_by_default_an_overlays_included() -> None:
    @lmdsl.program
    def support(message: str) -> Ticket:
        return classify(message)

    with support.with_params({"classify": Params("Sort the message.", (DEMO,))}):
        text = prompt_text(classify, {"message": "hi"})
    assert text.startswith("=== system ===\nSort the message.\n") and "I was charged twice" in text
    assert prompt_text(classify).startswith("=== system ===\nClassify a support message.\n")


def test_a_docstring_edit_changes_the_text() -> None:
    @lmdsl.fuzzy
    def edited(message: str, channel: Literal["email", "chat"] = "email", history: tuple[str, ...] = ()) -> Ticket:
        """Classify a customer's support message.

        Args:
            message: the customer's message
            history: earlier messages, oldest first
        """

    assert prompt_text(edited) != prompt_text(classify)
    assert prompt_text(edited).replace("a customer's support", "a support") == prompt_text(classify)


def test_inputs_and_parameters_that_do_not_fit_are_input_errors() -> None:
    with pytest.raises(InputError, match="message"):
        prompt_text(classify, {"channel": "email"})
    with pytest.raises(InputError):
        prompt_text(classify, params=Params("x", (Demo({"message": 3, "channel": "fax"}, "not a ticket"),)))
