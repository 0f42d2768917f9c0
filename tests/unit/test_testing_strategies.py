"""`lmdsl.testing`'s strategies: drawn inputs pass the signature's validation, drawn outputs are
values of the return type that survive a render and a parse, and a drawn model drives a
program's glue through any outputs its model could give."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

import lmdsl
from lmdsl.lm.types import Message, Request
from lmdsl.params import Demo, Params
from lmdsl.testing import DrawnModel, UnattributedRequest, drawn_model, inputs, outputs, prompt_text, replies
from tests.unit.fuzz_types import FUNCTIONS, THINKING, TYPES, Order, Tree, is_typed

FAST = settings(max_examples=60, derandomize=True, database=None, deadline=None)


# -- inputs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TYPES))
def test_every_drawn_input_passes_the_signatures_validation(name: str) -> None:
    fn = FUNCTIONS[name]

    @FAST
    @given(inputs(fn))
    def check(values: dict[str, Any]) -> None:
        assert set(values) == {"value"}
        validated = fn.signature.validate_inputs(values)
        assert is_typed(validated["value"], TYPES[name])
        prompt_text(fn, values).encode("utf-8")  # it renders, as valid Unicode

    check()


class Ticket(BaseModel):
    category: Literal["billing", "tech", "other"]
    urgency: int = Field(ge=1, le=5)


@lmdsl.fuzzy
def classify(message: str) -> Ticket:
    """Classify the support message."""


@lmdsl.fuzzy
def draft_reply(message: str, category: str, tone: Literal["formal", "warm"] = "warm") -> str:
    """Draft a reply to the support message."""


TEAMS = {"billing": "finance", "tech": "support", "other": "front desk"}


@lmdsl.program
def triage(message: str, order: Order | None = None) -> dict[str, str]:
    ticket = classify(message)
    lmdsl.require(ticket.urgency < 5 or ticket.category != "other", "an urgent ticket needs a team")
    reply = draft_reply(message, ticket.category)
    lmdsl.require(reply.strip() != "", "the reply is empty")
    return {"team": TEAMS[ticket.category], "reply": reply}


def test_inputs_leave_out_defaults_sometimes_and_give_typed_values() -> None:
    drawn: list[dict[str, Any]] = []

    @FAST
    @given(inputs(draft_reply))
    def collect(values: dict[str, Any]) -> None:
        assert draft_reply.signature.validate_inputs(values)["tone"] in ("formal", "warm")
        drawn.append(values)

    collect()
    assert any("tone" in values for values in drawn) and any("tone" not in values for values in drawn)


def test_inputs_of_a_program_pass_its_own_check_and_models_arrive_as_instances() -> None:
    orders = 0

    @FAST
    @given(inputs(triage))
    def check(values: dict[str, Any]) -> None:
        nonlocal orders
        bound = triage.python_signature.bind(**values)
        assert triage._checked(bound).arguments == values
        if values.get("order") is not None:
            orders += 1
            assert isinstance(values["order"], Order)

    check()
    assert orders > 0


def test_inputs_take_a_strategy_per_input_and_refuse_unknown_names() -> None:
    @FAST
    @given(inputs(draft_reply, message=st.just("hello")))
    def check(values: dict[str, Any]) -> None:
        assert values["message"] == "hello"

    check()
    with pytest.raises(TypeError, match="no input 'mesage'"):
        inputs(draft_reply, mesage=st.just("hello"))


def test_a_program_parameter_with_nothing_to_draw_from_needs_a_strategy() -> None:
    @lmdsl.program
    def loose(message: str, extra: Any) -> str:
        return classify(message).category

    with pytest.raises(TypeError, match="'extra'"):
        inputs(loose)

    @FAST
    @given(inputs(loose, extra=st.integers()))
    def check(values: dict[str, Any]) -> None:
        assert isinstance(values["extra"], int) and isinstance(values["message"], str)

    check()


# -- outputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TYPES))
def test_every_drawn_output_is_a_value_of_the_return_type_and_survives_a_round_trip(name: str) -> None:
    fn = FUNCTIONS[name]
    annotation = TYPES[name]

    @FAST
    @given(outputs(fn))
    def check(value: Any) -> None:
        assert is_typed(value, annotation)
        parsed, reasoning = fn.output_format.parse(fn.output_format.render(value))
        assert parsed == value or (isinstance(value, float) and math.isnan(value))
        assert reasoning is None

    check()


def test_drawn_outputs_honour_the_models_constraints_and_validator() -> None:
    @settings(FAST, max_examples=150)
    @given(outputs(FUNCTIONS["model"]))
    def check(order: Order) -> None:
        assert order.customer.strip() and len(order.customer) <= 40
        assert len(order.parts) <= 5 and 0.0 <= order.discount < 1.0
        for part in order.parts:
            assert 1 <= part.quantity <= 99 and part.sku[3] == "-"

    check()


def test_recursive_models_are_drawn_to_some_depth() -> None:
    def depth(tree: Tree) -> int:
        return 1 + max((depth(child) for child in tree.children), default=0)

    # a search, not a sample: whatever ran before in the process, a tree three deep is found
    deep = find(
        outputs(FUNCTIONS["recursive"]), lambda tree: depth(tree) >= 3, settings=settings(FAST, max_examples=2000)
    )
    assert depth(deep) >= 3


@pytest.mark.parametrize("name", list(THINKING))
def test_valid_replies_of_a_chain_of_thought_function_carry_the_reasoning(name: str) -> None:
    fn = THINKING[name]

    @FAST
    @given(replies(fn, hostile=False))
    def check(text: str) -> None:
        value, reasoning = fn.output_format.parse(text)
        assert isinstance(reasoning, str) and is_typed(value, TYPES[name])

    check()


# -- a drawn model ----------------------------------------------------------------------------
def test_a_drawn_model_drives_a_program_and_its_glue_only_fails_in_the_typed_ways() -> None:
    """The property the module exists for: whatever the model answers (valid or hostile), the
    program returns its value or raises AssertionFailed/OutputError; never a KeyError."""
    seen: set[str] = set()
    outcomes: set[str] = set()

    @settings(FAST, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
    @given(inputs(triage), st.data(), st.booleans())
    def check(values: dict[str, Any], data: st.DataObject, hostile: bool) -> None:
        model = drawn_model(data, triage, hostile=hostile)
        with lmdsl.using(model=model):
            try:
                result = triage(**values)
            except lmdsl.AssertionFailed:
                outcomes.add("assertion")
            except lmdsl.OutputError:
                outcomes.add("output error")
            else:
                assert result["team"] in TEAMS.values() and result["reply"].strip()
                outcomes.add("value")
        seen.update(function for function, _ in model.replies)

    check()
    assert seen == {"classify", "draft_reply"}
    assert outcomes == {"value", "assertion", "output error"}


def test_a_drawn_model_finds_the_output_that_breaks_the_glue() -> None:
    """A program whose glue forgot a category: the drawn model finds it, as a KeyError."""

    @lmdsl.program
    def careless(message: str) -> str:
        ticket = classify(message)
        return {"billing": "finance", "tech": "support"}[ticket.category]

    @settings(FAST, max_examples=100)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        with lmdsl.using(model=drawn_model(data, careless)):
            careless("my card was charged twice")

    with pytest.raises(KeyError, match="other"):
        check()


def test_a_drawn_model_follows_the_parameters_in_force() -> None:
    """Demos overlaid for a candidate change the prompt prefix; the model still knows the function."""
    demo = Demo({"message": "refund please", "category": "billing"}, "Sure, we will refund you.")

    @FAST
    @given(st.data())
    def check(data: st.DataObject) -> None:
        with triage.with_params({"draft_reply": Params("Reply kindly.", (demo,))}):
            model = drawn_model(data, triage)
            assert len(draft_reply.prompt_prefix) == 3  # system, the demo's input, the demo's reply
            with lmdsl.using(model=model):
                draft_reply("hello", "tech")
            assert model.replies[0][0] == "draft_reply"

    check()


def test_a_request_no_function_sends_raises_a_clear_error() -> None:
    @FAST
    @given(st.data())
    def check(data: st.DataObject) -> None:
        model = drawn_model(data, classify)
        with lmdsl.using(model=model), pytest.raises(UnattributedRequest, match="classify") as caught:
            draft_reply("hello", "tech")
        assert "drawn_model(data, [program, function])" in str(caught.value)
        with pytest.raises(UnattributedRequest):
            model.complete(Request((Message("system", "Something else."), Message("user", "hi"))))
        assert not isinstance(caught.value, lmdsl.LMDSLError)  # a set-up mistake, never an accepted outcome

    check()


def test_a_drawn_model_knows_every_function_it_is_given_and_nothing_else() -> None:
    @FAST
    @given(st.data())
    def check(data: st.DataObject) -> None:
        model = drawn_model(data, [triage, classify])
        assert isinstance(model, DrawnModel) and model.cacheable is False and model.live is False
        assert [fn.__name__ for fn in model.functions] == ["classify", "draft_reply"]
        # demos the function no longer has (another context's overlay): its system message and schema still tell
        system = draft_reply.prompt_prefix[0]
        demo = (Message("user", "message: hi"), Message("assistant", '{"draft_reply": "hello"}'))
        request = Request((system, *demo, Message("user", "message: x")), draft_reply.output_format.schema_text)
        assert model.attribute(request) is draft_reply
        with pytest.raises(UnattributedRequest):
            model.attribute(request._replace(json_schema=classify.output_format.schema_text))

    check()
    with pytest.raises(TypeError):
        drawn_model(None, [len])  # type: ignore[arg-type, list-item]


def test_importing_lmdsl_or_lmdsl_testing_does_not_load_hypothesis() -> None:
    code = "import sys, lmdsl, lmdsl.testing; sys.exit('hypothesis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
