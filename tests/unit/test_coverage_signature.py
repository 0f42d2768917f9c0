"""`Signature` corners the main suite leaves out: unknown fields, unusual checks, docstring layouts,
positional-only parameters, annotations with plain-string descriptions, and which inputs a record copies."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated, Any, Literal, cast

import pytest
from pydantic import BaseModel, Field

from lmdsl import rules
from lmdsl.errors import InputError, SignatureError
from lmdsl.signature import Signature, build_signature, input_error, synthetic_function


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def summarise(text: str, count: int = 3) -> str:
    """Summarise the text in `count` words."""


def signature_of(fn: Callable[..., Any]) -> Signature:
    return build_signature(fn)


# -- Signature.field ----------------------------------------------------------------------------------------


def test_field_finds_a_parameter_by_name() -> None:
    sig = signature_of(summarise)
    assert sig.field("count").annotation is int
    assert sig.field("count").default == 3


def test_field_of_a_name_that_is_not_a_parameter_is_a_key_error() -> None:
    """`dump_demos` relies on the KeyError to reject demo inputs the function does not take."""
    with pytest.raises(KeyError) as raised:
        signature_of(summarise).field("length")
    assert raised.value.args == ("length",)


# -- bind_check ---------------------------------------------------------------------------------------------


def test_a_check_whose_signature_cannot_be_read_is_a_wiring_error() -> None:
    with pytest.raises(SignatureError, match=r"cannot read its signature \(42 is not a callable object\)") as raised:
        signature_of(summarise).bind_check(cast(Any, 42), "check")
    assert raised.value.code == rules.WIRING
    assert "of summarise" in str(raised.value)


def test_a_check_taking_star_args_is_refused_with_its_name() -> None:
    """`*rest` cannot be fed by name, so the check is told to name the inputs it needs."""

    def long_enough(output: str, *rest: str) -> bool:
        return len(output) > len(rest)

    with pytest.raises(SignatureError, match=r"\*rest is not supported; name the inputs it needs") as raised:
        signature_of(summarise).bind_check(long_enough, "check")
    assert raised.value.code == rules.WIRING


def test_a_check_parameter_that_is_not_an_input_but_has_a_default_keeps_its_default() -> None:
    seen: list[tuple[str, str, bool]] = []

    def mentions(output: str, text: str, *, strict: bool = True) -> bool:
        seen.append((output, text, strict))
        return text in output

    bound = signature_of(summarise).bind_check(mentions, "check")
    assert bound("a short text", {"text": "short", "count": 2}) is True
    assert seen == [("a short text", "short", True)]


def test_a_check_parameter_that_is_not_an_input_and_has_no_default_is_refused() -> None:
    """The contrast to the test above: without a default, `strict` cannot be filled."""

    def mentions(output: str, text: str, strict: bool) -> bool:
        return strict and text in output

    with pytest.raises(SignatureError, match="parameter 'strict' is not an input of summarise") as raised:
        signature_of(summarise).bind_check(mentions, "check")
    assert raised.value.code == rules.WIRING


def test_a_check_whose_annotations_cannot_be_resolved_is_bound_anyway() -> None:
    """An annotation naming an undefined type cannot be judged; the call itself will tell."""

    def longer_than(output: str, count: int) -> bool:
        return len(output.split()) > count

    longer_than.__annotations__["output"] = "NoSuchType"
    bound = signature_of(summarise).bind_check(longer_than, "reward")
    assert bound("one two three four", {"text": "t", "count": 3}) is True
    assert bound("one two", {"text": "t", "count": 3}) is False


# -- docstrings ---------------------------------------------------------------------------------------------


def test_a_docstring_with_sections_but_no_task_description_is_refused() -> None:
    def no_task(text: str) -> str:
        """Args:
        text: the text to read.
        """

    with pytest.raises(
        SignatureError, match="the docstring has no description of the task before its sections"
    ) as raised:
        build_signature(no_task)
    assert raised.value.code == rules.DOCSTRING


def google_style(text: str, count: int) -> str:
    """Summarise the review.

    Args:
        text: the review
            to summarise, continued.

        count: how many words.

    Returns:
        a summary

        in one line.
    """


def test_google_style_sections_with_blank_lines_give_argument_and_return_descriptions() -> None:
    sig = build_signature(google_style)
    assert sig.instructions == "Summarise the review."
    assert sig.field("text").description == "the review to summarise, continued."
    assert sig.field("count").description == "how many words."
    assert sig.output.description == "a summary in one line."


# -- parameters and annotations -----------------------------------------------------------------------------


def joined(first: str, /, second: str) -> str:
    """Join the two texts."""


def test_a_positional_only_parameter_binds_by_position_but_not_by_name() -> None:
    sig = build_signature(joined)
    assert sig.bind(("a", "b"), {}) == {"first": "a", "second": "b"}
    assert sig.bind(("a",), {"second": "b"}) == {"first": "a", "second": "b"}
    with pytest.raises(InputError, match="joined\\(\\) got an unexpected keyword argument 'first'"):
        sig.bind((), {"first": "a", "second": "b"})


def described(
    text: Annotated[str, "the review to read"],
    count: Annotated[int, Field(ge=0), 7],
) -> Annotated[str, "a one-line summary"]:
    """Summarise the review.

    Args:
        count: how many words to use.
    """


def test_annotated_with_a_plain_string_is_a_description_and_other_metadata_is_ignored() -> None:
    """A plain string in `Annotated` describes like `Field(description=...)`; a `Field` without a
    description and a non-string extra say nothing, so the docstring's `Args:` text is used."""
    sig = build_signature(described)
    assert sig.field("text").annotation is str
    assert sig.field("text").description == "the review to read"
    assert sig.field("count").annotation is int
    assert sig.field("count").description == "how many words to use."
    assert sig.output.annotation is str
    assert sig.output.description == "a one-line summary"


class Tool(BaseModel):
    run: Callable[[], int]


def uses_a_tool(text: str) -> Tool:
    """Pick a tool for the text."""


def test_a_return_type_without_a_json_schema_is_a_signature_error() -> None:
    with pytest.raises(SignatureError, match="uses_a_tool: the return type has no JSON schema"):
        build_signature(uses_a_tool)


# -- synthetic functions ------------------------------------------------------------------------------------


def test_a_synthetic_function_takes_keywords_and_has_no_body_of_its_own() -> None:
    derived = synthetic_function("lookup", "Look the word up.", [("word", str), ("limit", int)], list[str])
    sig = build_signature(derived)
    assert sig.name == "lookup" and sig.instructions == "Look the word up."
    assert sig.input_names == ("word", "limit")
    assert sig.output.annotation == list[str]
    with pytest.raises(InputError, match=r"lookup\(\) takes 0 positional argument\(s\) but 1 were given"):
        sig.bind(("w",), {})
    with pytest.raises(NotImplementedError, match="lookup is implemented by a language model"):
        derived(word="w", limit=1)


# -- which inputs a snapshot copies -------------------------------------------------------------------------


def immutable_inputs(
    label: Literal["a", "b"],
    colour: Colour,
    pair: tuple[int, str],
    many: tuple[str, ...],
    maybe: int | None,
) -> str:
    """Describe the inputs."""


def test_literal_enum_tuple_and_optional_inputs_are_not_copied_by_a_snapshot() -> None:
    """Values of these types cannot change after the call, so the snapshot is the mapping itself."""
    sig = build_signature(immutable_inputs)
    inputs = {"label": "a", "colour": Colour.RED, "pair": (1, "x"), "many": ("p", "q"), "maybe": None}
    assert sig.snapshot(inputs) is inputs


def nested_lists(groups: tuple[list[str], ...], maybe: list[int] | None) -> str:
    """Describe the groups."""


def test_a_tuple_or_union_holding_a_mutable_type_is_deep_copied_by_a_snapshot() -> None:
    sig = build_signature(nested_lists)
    inner = ["a", "b"]
    numbers = [1, 2]
    inputs = {"groups": (inner,), "maybe": numbers}
    copied = sig.snapshot(inputs)
    assert copied is not inputs
    assert copied == {"groups": (["a", "b"],), "maybe": [1, 2]}
    inner.append("c")
    numbers.append(3)
    assert copied == {"groups": (["a", "b"],), "maybe": [1, 2]}


def test_a_snapshot_leaves_out_mutable_inputs_it_was_not_given() -> None:
    """Defaults are filled by `validate_inputs`, not by the snapshot."""
    sig = build_signature(nested_lists)
    tags = ["x"]
    copied = sig.snapshot({"groups": (tags,)})
    assert copied == {"groups": (["x"],)}
    assert copied["groups"][0] is not tags


# -- input_error --------------------------------------------------------------------------------------------


def test_input_error_for_any_other_failure_names_the_field_and_the_reason() -> None:
    error = input_error("count", 5, ValueError("out of range for this model"))
    assert isinstance(error, InputError)
    assert str(error) == "input field 'count': out of range for this model"
    assert error.field == "count"
