"""Property: for every supported output type, a value written as the model would write it
parses back to an equal value of the same type, through the whole call path."""

from __future__ import annotations

import enum
import json
from typing import Any, Literal, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typing_extensions import TypedDict

import lmdsl
from lmdsl.prompt import OutputFormat
from lmdsl.signature import build_signature


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Item(BaseModel):
    name: str
    quantity: int
    tags: list[str] = []


class Order(BaseModel):
    customer: str
    items: list[Item]
    rush: bool
    note: str | None = None


class Contact(TypedDict):
    name: str
    age: int


text = st.text(max_size=30)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
items = st.builds(Item, name=text, quantity=st.integers(), tags=st.lists(text, max_size=3))
orders = st.builds(Order, customer=text, items=st.lists(items, max_size=3), rush=st.booleans(), note=st.none() | text)
contacts = st.fixed_dictionaries({"name": text, "age": st.integers()})

CASES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (str, text),
    (int, st.integers()),
    (float, finite),
    (bool, st.booleans()),
    (Literal["positive", "negative", "neutral"], st.sampled_from(["positive", "negative", "neutral"])),
    (Literal[1, 2, 3], st.sampled_from([1, 2, 3])),
    (Mood, st.sampled_from(Mood)),
    (Priority, st.sampled_from(Priority)),
    (list[str], st.lists(text, max_size=5)),
    (list[int], st.lists(st.integers(), max_size=5)),
    (dict[str, float], st.dictionaries(text, finite, max_size=4)),
    (tuple[int, str], st.tuples(st.integers(), text)),
    (tuple[bool, ...], st.lists(st.booleans(), max_size=4).map(tuple)),
    (Optional[int], st.none() | st.integers()),
    (int | str, st.integers() | text),
    (Item, items),
    (Order, orders),
    (list[Item], st.lists(items, max_size=3)),
    (Contact, contacts),
    (dict[str, list[Mood]], st.dictionaries(text, st.lists(st.sampled_from(Mood), max_size=3), max_size=3)),
]


def fuzzy_returning(annotation: Any, *, strategy: lmdsl.Strategy = lmdsl.predict) -> lmdsl.FuzzyFunction[..., Any]:
    def produce(request: str) -> Any:  # type: ignore[lmdsl-serializable]
        """Produce a value."""

    produce.__annotations__ = {"request": str, "return": annotation}
    return lmdsl.fuzzy(strategy=strategy, retries=0)(produce)


def test_round_trip_of_every_supported_type() -> None:
    for annotation, values in CASES:
        fmt = OutputFormat(build_signature(fuzzy_returning(annotation).__wrapped__).output, reasoning=False)

        @settings(max_examples=40, deadline=None)
        @given(values)
        def check(value: Any) -> None:  # run at once, inside this turn of the loop
            text = fmt.render(value)  # noqa: B023
            json.loads(text)
            parsed, reasoning = fmt.parse(text)  # noqa: B023
            assert parsed == value, (annotation, value, parsed)  # noqa: B023
            assert type(parsed) is type(value), (annotation, type(value), type(parsed))  # noqa: B023
            assert reasoning is None

        check()


def test_round_trip_through_a_call_with_reasoning() -> None:
    for annotation, values in CASES:
        fn = fuzzy_returning(annotation, strategy=lmdsl.chain_of_thought)

        @settings(max_examples=15, deadline=None)
        @given(values, text)
        def check(value: Any, reasoning: str) -> None:
            reply = fn.output_format.render(value, reasoning)  # noqa: B023  (run at once, inside this turn)
            with lmdsl.using(model=lmdsl.ScriptedModel([reply])):
                record = fn.invoke({"request": "go"})  # noqa: B023
            assert record.output == value and type(record.output) is type(value)
            assert record.reasoning == reasoning

        check()
