"""The return and input types the strategy tests and the reply fuzzer run over: one fuzzy
function per type, taking a value of that type and returning one."""

from __future__ import annotations

import enum
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field, TypeAdapter, field_validator
from typing_extensions import TypedDict

from lmdsl.calls.function import FuzzyFunction
from lmdsl.signature import synthetic_function
from lmdsl.strategies.base import Strategy, chain_of_thought, predict


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Part(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d{2}$")
    quantity: int = Field(ge=1, le=99)


class Order(BaseModel):
    """A nested model with field constraints and a validator."""

    customer: str = Field(min_length=1, max_length=40)
    parts: list[Part] = Field(max_length=5)
    priority: Literal["low", "high"] = "low"
    note: str | None = None
    discount: float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("customer")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the customer name is blank")
        return value


class Address(TypedDict):
    street: str
    number: int
    tags: list[str]


class Tree(BaseModel):
    """A recursive model."""

    label: str
    children: list[Tree] = []


TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "literal": Literal["yes", "no", 3],
    "enum": Color,
    "list": list[int],
    "dict": dict[str, list[str]],
    "optional": Optional[int],
    "tuple": tuple[int, str, bool],
    "union": int | str,
    "model": Order,
    "typeddict": Address,
    "recursive": Tree,
}


def function_of(name: str, strategy: Strategy = predict) -> FuzzyFunction[..., Any]:
    """`answer_<name>(value: T) -> T`, a fuzzy function that takes and returns the type named `name`."""
    tp = TYPES[name]
    fn = synthetic_function(f"answer_{name}", "Answer with a value of the type.", [("value", tp)], tp)
    return FuzzyFunction(fn, strategy=strategy, retries=1)


FUNCTIONS = {name: function_of(name) for name in TYPES}
THINKING = {name: function_of(name, chain_of_thought) for name in ("str", "model", "optional")}


def is_typed(value: Any, annotation: Any) -> bool:
    """Whether `value` already is a value of `annotation` (pydantic's strict mode: no coercion)."""
    if annotation is str:
        return type(value) is str
    TypeAdapter(annotation).validate_python(value, strict=True)
    return True
