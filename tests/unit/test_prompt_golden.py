"""The output's shape sketch and the `max_tokens` sizing, against values worked out by hand.

The sizing is a heuristic (about 2 tokens of JSON punctuation per value, a key at half its
length plus 2, numbers 8, strings 2 + maxLength/3 with 300 by default, arrays 8 items unless
`maxItems`, a free-form object 5 entries, depth cut at 6, then x1.5 + 16 and a 4,096 cap);
each expected figure below is that arithmetic done by hand, written in the comment beside
it, so a change to any constant shows up here.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from lmdsl.prompt import MAX_TOKENS_CAP, OutputFormat, _estimate_tokens, describe_shape
from lmdsl.signature import build_signature


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    x: int
    y: str | None = None


class Outer(BaseModel):
    label: Literal["a", "b"] = Field(description="the label")
    items: list[Inner]
    pair: tuple[int, str]
    table: dict[str, float]
    color: Color
    flag: bool = False
    note: int | str | None = None


def f_number(q: str) -> float:
    """Do."""


def f_text(q: str) -> str:
    """Do."""


def f_labels(q: str) -> list[Literal["x", "yy"]]:
    """Do."""


def f_table(q: str) -> dict[str, list[int]]:
    """Do."""


def f_huge(q: str) -> list[dict[str, dict[str, list[int]]]]:
    """Do."""


def f_outer(q: str) -> Outer:
    """Do."""


def output_format(fn: Any, *, reasoning: bool = False) -> OutputFormat:
    return OutputFormat(build_signature(fn).output, reasoning=reasoning)


@pytest.mark.parametrize(
    ("fn", "reasoning", "expected"),
    [
        (f_number, False, 40),  # "f_number" 8/2 = 4: 2 + (4 + 2 + 8) = 16; 16 * 1.5 = 24; + 16
        (f_number, True, 202),  # 16 + ("reasoning" 4.5 + 2 + string 102) = 124.5; * 1.5 -> 186; + 16
        (f_text, False, 179),  # 2 + (3 + 2 + 102) = 109; * 1.5 -> 163; + 16
        (f_labels, False, 91),  # enum 2 + 4/2 = 4; array 2 + 8 * 5 = 42; 2 + 4 + 2 + 42 = 50; -> 75; + 16
        (f_table, False, 630),  # array 2 + 8 * 9 = 74; dict 2 + 5 * (6 + 74) = 402; 2 + 3.5 + 2 + 402 -> 614; + 16
        (f_huge, False, MAX_TOKENS_CAP),  # 8 items of dicts of 2,042 tokens: capped
    ],
)
def test_max_tokens_is_sized_from_the_schema(fn: Any, reasoning: bool, expected: int) -> None:
    assert output_format(fn, reasoning=reasoning).max_tokens == expected


@pytest.mark.parametrize(
    ("schema", "defs", "expected"),
    [
        ({"type": "string", "maxLength": 30}, {}, 12.0),
        ({"type": "string"}, {}, 102.0),
        ({"type": "integer"}, {}, 8),
        ({"type": "number"}, {}, 8),
        ({"type": "boolean"}, {}, 2),
        ({"type": "null"}, {}, 2),
        ({}, {}, 30),
        ({"type": "array", "maxItems": 2, "items": {"type": "integer"}}, {}, 20),  # 2 + 2 * 9
        ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}]}, {}, 14),  # 2 + 9 + 3
        ({"type": "object", "additionalProperties": {"type": "integer"}}, {}, 72),  # 2 + 5 * 14
        ({"type": "object", "properties": {"abcd": {"type": "boolean"}}}, {}, 8.0),  # 2 + (2 + 2 + 2)
        ({"enum": ["aaaa", "b"]}, {}, 5.0),  # 2 + len('"aaaa"') / 2
        ({"const": "abc"}, {}, 4.5),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, {}, 102.0),
        ({"oneOf": [{"type": "integer"}, {"type": "boolean"}]}, {}, 8),
        ({"allOf": [{"type": "boolean"}]}, {}, 2),
        ({"$ref": "#/$defs/A"}, {"A": {"type": "integer"}}, 8),
        ({"$ref": "#/$defs/Missing"}, {}, 30),
    ],
)
def test_token_estimates_per_kind_of_schema(schema: dict[str, Any], defs: dict[str, Any], expected: float) -> None:
    assert _estimate_tokens(schema, defs, 0) == expected


def test_token_estimates_stop_at_depth_seven_with_twenty() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(10):
        deep = {"type": "array", "items": deep}
    # depth 7 counts 20; each array level above it is 2 + 8 * (inner + 1): 170, 1370, ... 44938970
    assert _estimate_tokens(deep, {}, 0) == 44938970
    assert _estimate_tokens(deep, {}, 7) == 20


def test_the_shape_of_a_model_with_every_kind_of_field() -> None:
    assert output_format(f_outer).shape == (
        "{\n"
        '  "label": "a" | "b", // the label\n'
        '  "items": [{\n'
        '    "x": integer,\n'
        '    "y": string | null // optional\n'
        "  }, ...],\n"
        '  "pair": [integer, string],\n'
        '  "table": {"<key>": number, ...},\n'
        '  "color": "red" | "blue",\n'
        '  "flag": boolean, // optional\n'
        '  "note": integer | string | null // optional\n'
        "}"
    )


@pytest.mark.parametrize(
    ("fn", "reasoning", "expected"),
    [
        (f_labels, False, '{"f_labels": ["x" | "yy", ...]}'),
        (f_labels, True, '{"reasoning": string, "f_labels": ["x" | "yy", ...]}'),
        (f_table, False, '{"f_table": {"<key>": [integer, ...], ...}}'),
        (f_number, False, '{"f_number": number}'),
    ],
)
def test_the_shape_of_simple_outputs(fn: Any, reasoning: bool, expected: str) -> None:
    assert output_format(fn, reasoning=reasoning).shape == expected


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"allOf": [{"type": "integer"}]}, "integer"),
        ({"oneOf": [{"type": "integer"}, {"const": "none"}]}, 'integer | "none"'),
        ({"type": ["string", "null"]}, "string | null"),
        ({}, "any"),
        ({"type": "object"}, "{...}"),
        ({"type": "object", "additionalProperties": True}, "{...}"),
        ({"enum": ["é", 1]}, '"é" | 1'),
        ({"$ref": "#/$defs/Missing"}, "any"),
    ],
)
def test_describe_shape_of_each_construct(schema: dict[str, Any], expected: str) -> None:
    assert describe_shape(schema, {}) == expected


def test_describe_shape_stops_at_depth_nine_with_any() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(10):
        deep = {"type": "array", "items": deep}
    assert describe_shape(deep, {}) == "[" * 9 + "any" + ", ...]" * 9


class Six(BaseModel):
    a: int
    b: int
    c: int
    d: int
    e: int
    f: int


def f_six(q: str) -> Six:
    """Do."""


def f_numbers(q: str) -> list[int]:
    """Do."""


NOT_INT = "Input should be a valid integer, unable to parse string as an integer"


@pytest.mark.parametrize(
    ("fn", "reply", "message"),
    [
        (f_six, '{"a":"x","b":"x","c":"x","d":"x","e":"x","f":"x"}', "; ".join(f"{k}: {NOT_INT}" for k in "abcde")),
        (f_numbers, '{"f_numbers": [1, "x"]}', f"f_numbers.1: {NOT_INT}"),
        (f_numbers, '{"f_numbers": "x"}', "f_numbers: Input should be a valid list"),
        (f_six, "[]", "the reply must be a JSON object, not list"),
        (f_numbers, "{}", 'the reply must have the key "f_numbers"'),
    ],
)
def test_what_the_model_is_told_about_an_invalid_reply(fn: Any, reply: str, message: str) -> None:
    from lmdsl.prompt import InvalidOutput

    with pytest.raises(InvalidOutput) as caught:
        output_format(fn).parse(reply)
    assert str(caught.value) == message  # at most five problems, each at its path under the key


def chain(kind: str, levels: int = 11) -> tuple[dict[str, Any], dict[str, Any]]:
    """A schema nesting one construct `levels` deep, each level marked by its number."""
    node: dict[str, Any] = {"const": "end"}
    defs: dict[str, Any] = {}
    for level in reversed(range(levels)):
        if kind == "anyOf":
            node = {"anyOf": [{"const": level}, node]}
        elif kind == "allOf":
            node = {"allOf": [node]}
        elif kind == "prefixItems":
            node = {"type": "array", "prefixItems": [{"const": level}, node]}
        elif kind == "additionalProperties":
            node = {"type": "object", "additionalProperties": node}
        elif kind == "properties":
            node = {"type": "object", "properties": {"v": {"const": level, "description": f"d{level}"}, "n": node}}
        else:
            defs[f"A{level}"] = {"type": "object", "properties": {"v": {"const": level}, "n": node}}
            node = {"$ref": f"#/$defs/A{level}"}
    return node, defs


def nested_fields(levels: int) -> str:
    """The sketch of `chain("properties")`: each level indented two more, notes as comments."""
    lines = []
    for level in range(levels):
        pad = "  " * (level + 1)
        lines += [f'{pad}"v": {level}, // d{level}', f'{pad}"n": {{']
    pad = "  " * (levels + 1)
    lines += [f'{pad}"v": any, // d{levels}', f'{pad}"n": any // optional']
    lines += ["  " * level + "} // optional" for level in reversed(range(1, levels + 1))]
    return "{\n" + "\n".join(lines) + "\n}"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # a child is one level deeper than its parent, whatever the construct; past depth 8 it is "any"
        ("anyOf", "0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | any | any"),
        ("allOf", "any"),
        ("prefixItems", "[0, [1, [2, [3, [4, [5, [6, [7, [any, any]]]]]]]]]"),
        ("additionalProperties", '{"<key>": ' * 9 + "any" + ", ...}" * 9),
        ("properties", nested_fields(8)),
        # a $ref costs a level of its own: the definition is one deeper, its fields two
        (
            "$ref",
            '{\n  "v": 0, // optional\n  "n": {\n    "v": 1, // optional\n    "n": {\n      "v": 2, // optional\n'
            '      "n": {\n        "v": 3, // optional\n        "n": any // optional\n      } // optional\n'
            "    } // optional\n  } // optional\n}",
        ),
    ],
)
def test_depth_is_counted_through_every_construct(kind: str, expected: str) -> None:
    node, defs = chain(kind)
    assert describe_shape(node, defs) == expected


def test_a_model_inside_a_union_keeps_its_indentation() -> None:
    schema = {
        "anyOf": [{"type": "object", "properties": {"a": {"type": "integer", "description": "x"}}}, {"type": "null"}]
    }
    assert describe_shape(schema, {}, 4) == '{\n      "a": integer // x\n    } | null'


def test_constants_and_enums_keep_non_ascii_text() -> None:
    assert describe_shape({"const": "é"}, {}) == describe_shape({"enum": ["é"]}, {}) == '"é"'


@pytest.mark.parametrize(
    ("schema", "defs", "expected"),
    [
        ({"type": "array"}, {}, "[any, ...]"),  # no "items": anything
        ({"$ref": "A"}, {"A": {"type": "integer"}}, "integer"),  # a bare name, no "#/$defs/" path
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, {}, '{\n  "a": integer // optional\n}'),
    ],
)
def test_describe_shape_with_parts_left_out(schema: dict[str, Any], defs: dict[str, Any], expected: str) -> None:
    assert describe_shape(schema, defs) == expected
