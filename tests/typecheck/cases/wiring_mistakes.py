"""A small support-desk program with five wiring mistakes, one of each kind the plugin
knows. Each mistake's line ends with `# expect: CODE`; tests/test_mypy_plugin.py checks
that mypy with lmdsl's plugin reports exactly these, and `lmdsl check` the same codes."""

# mypy: disable-error-code="empty-body"

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

import lmdsl


class Reply(BaseModel):
    text: str
    escalate: bool


def order_status(order_id: str):  # a tool the model may call
    return "shipped"


@lmdsl.fuzzy
def route(message: str) -> Literal["billing", "shipping", "other"]:
    """Route the customer's message to a team."""
    ...


@lmdsl.fuzzy(strategy=lmdsl.react([order_status]))  # expect: lmdsl-wiring
def draft(message: str, team: str) -> Reply:
    """Draft a reply to the customer's message for the given team."""
    ...


@draft.ensure
def polite(output: str) -> bool:  # expect: lmdsl-wiring
    return "sorry" in output.lower()


@draft.ensure(soft=True)
def on_topic(output: Reply, *, mesage: str) -> bool:  # expect: lmdsl-wiring
    return bool(set(output.text.split()) & set(mesage.split()))


def same_team(example: lmdsl.Example, prediction: Reply) -> bool:
    return bool(prediction == example.fields["reply"])


TRAIN = [
    lmdsl.Example(message="Where is my parcel?", reply="It is on its way."),
    lmdsl.Example(msg="I was charged twice", reply="We will refund you."),  # expect: lmdsl-wiring
]


@lmdsl.optimize(trainset=TRAIN, metric=same_team)  # expect: lmdsl-wiring
@lmdsl.program
def support(message: str) -> str:
    team = route(message)
    return draft(message, team).text
