"""Decoration-time analysis: which annotations are accepted, and the errors for the rest."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

import lmdsl
from lmdsl.signature import build_signature


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Point(BaseModel):
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


SUPPORTED: list[Any] = [
    str,
    int,
    float,
    bool,
    Literal["a", "b"],
    Literal[1, 2, True],
    Color,
    list[str],
    dict[str, int],
    tuple[int, str],
    tuple[float, ...],
    Optional[int],
    int | str,
    Point,
    Movie,
    list[Point],
    dict[str, list[Color | None]],
    Annotated[str, Field(description="d")],
]


def make(annotation: Any, *, param: Any = str, doc: str | None = "Do it.") -> Callable[..., Any]:
    def fn(x: Any) -> Any:
        pass

    fn.__annotations__ = {"x": param, "return": annotation}
    fn.__doc__ = doc
    return fn


@pytest.mark.parametrize("annotation", SUPPORTED, ids=repr)
def test_supported_types_build_a_signature_as_output_and_input(annotation: Any) -> None:
    as_output = build_signature(make(annotation))
    as_input = build_signature(make(str, param=annotation))
    assert as_output.output.schema
    assert as_input.inputs[0].name == "x"


@pytest.mark.parametrize(
    ("annotation", "fragment"),
    [
        (set[int], "set"),
        (object, "object"),
        (Callable[[int], int], "cannot be written into a prompt"),
        (dict[int, str], "dict keys must be str"),
        (list, "bare list"),
        (list[set[str]], "set"),
        (Any, "Any"),
    ],
    ids=repr,
)
def test_unsupported_types_are_type_errors_naming_function_and_parameter(annotation: Any, fragment: str) -> None:
    with pytest.raises(TypeError) as caught:
        build_signature(make(str, param=annotation))
    message = str(caught.value)
    assert isinstance(caught.value, lmdsl.SignatureError)
    assert "make.<locals>.fn" in message and "parameter 'x'" in message and fragment in message
    with pytest.raises(lmdsl.SignatureError, match="the return type"):
        build_signature(make(annotation))


def test_none_return_is_rejected() -> None:
    with pytest.raises(lmdsl.SignatureError, match="None is only allowed inside Optional"):
        build_signature(make(type(None)))


def test_missing_docstring_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"fn: a fuzzy function needs a docstring"):
        build_signature(make(str, doc=None))


def test_missing_parameter_annotation_names_the_parameter() -> None:
    def classify(text, label: str) -> str:  # type: ignore[no-untyped-def, lmdsl-signature]
        """Classify."""

    with pytest.raises(TypeError, match=r"classify: parameter 'text' has no type annotation"):
        lmdsl.fuzzy(classify)


def test_missing_return_annotation() -> None:
    def classify(text: str):  # type: ignore[no-untyped-def, lmdsl-signature]
        """Classify."""

    with pytest.raises(TypeError, match=r"classify: the return type is not annotated"):
        lmdsl.fuzzy(classify)


def test_var_args_and_kwargs_are_rejected() -> None:
    def many(*texts: str) -> str:  # type: ignore[lmdsl-signature]
        """Join."""
        return ""

    def named(**fields: str) -> str:  # type: ignore[lmdsl-signature]
        """Join."""
        return ""

    with pytest.raises(TypeError, match=r"many: \*texts is not supported"):
        lmdsl.fuzzy(many)
    with pytest.raises(TypeError, match=r"named: \*\*fields is not supported"):
        lmdsl.fuzzy(named)


def test_unresolvable_annotation_is_reported() -> None:
    def broken(text: Missing) -> str:  # type: ignore[name-defined]  # noqa: F821
        """Classify."""
        return ""

    with pytest.raises(TypeError, match="broken: its annotations cannot be resolved"):
        lmdsl.fuzzy(broken)


def test_descriptions_come_from_annotated_and_docstring_sections() -> None:
    def answer(question: Annotated[str, Field(description="what is asked")], context: list[str]) -> int:
        """Answer the question from the context.

        Args:
            question: ignored, Annotated wins
            context: passages that may hold
                the answer

        Returns:
            the number asked for
        """
        return 0

    sig = build_signature(answer)
    assert sig.instructions == "Answer the question from the context."
    assert sig.inputs[0].description == "what is asked"
    assert sig.inputs[1].description == "passages that may hold the answer"
    assert sig.output.description == "the number asked for"


def test_chain_of_thought_refuses_an_output_model_with_a_reasoning_field() -> None:
    class Out(BaseModel):
        reasoning: str

    def explain(text: str) -> Out:
        """Explain."""
        raise NotImplementedError

    with pytest.raises(lmdsl.SignatureError, match="already has a field named 'reasoning'"):
        lmdsl.fuzzy(strategy=lmdsl.chain_of_thought)(explain)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": -1}, "retries must be"),
        ({"temperature": 3.0}, "temperature must be"),
        ({"max_tokens": 0}, "max_tokens must be"),
        ({"strategy": "cot"}, "strategy must be"),
    ],
)
def test_bad_decorator_options_are_reported(options: dict[str, Any], fragment: str) -> None:
    def echo(text: str) -> str:
        """Echo."""
        return text

    with pytest.raises(lmdsl.SignatureError, match=fragment):
        lmdsl.fuzzy(**options)(echo)


def test_bind_follows_python_argument_rules() -> None:
    def f(a: str, b: int = 3, *, c: bool = False) -> str:
        """Do."""
        return ""

    sig = build_signature(f)
    assert sig.bind(("x",), {}) == {"a": "x", "b": 3, "c": False}
    assert sig.bind(("x", 5), {"c": True}) == {"a": "x", "b": 5, "c": True}
    with pytest.raises(TypeError, match="takes 2 positional"):
        sig.bind(("x", 1, True), {})
    with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
        sig.bind(("x",), {"d": 1})
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        sig.bind(("x",), {"a": "y"})
    with pytest.raises(TypeError, match="missing required argument"):
        sig.bind((), {"b": 2})


def test_validate_inputs_names_the_field() -> None:
    def f(count: int, tags: list[str]) -> str:
        """Do."""
        return ""

    sig = build_signature(f)
    assert sig.validate_inputs({"count": "3", "tags": ["a"]}) == {"count": 3, "tags": ["a"]}
    with pytest.raises(lmdsl.InputError, match="'count'") as caught:
        sig.validate_inputs({"count": "many", "tags": []})
    assert caught.value.field == "count"
    with pytest.raises(lmdsl.InputError, match="missing input field 'tags'"):
        sig.validate_inputs({"count": 1})
    with pytest.raises(lmdsl.InputError, match="unknown input field 'extra'"):
        sig.validate_inputs({"count": 1, "tags": [], "extra": 0})


def test_fingerprint_changes_with_the_docstring_and_types() -> None:
    def a(text: str) -> str:
        """One."""
        return ""

    def b(text: str) -> str:
        """Two."""
        return ""

    def c(text: str) -> int:
        """One."""
        return 0

    b.__name__ = c.__name__ = "a"
    prints = {build_signature(fn).fingerprint for fn in (a, b, c)}
    assert len(prints) == 3
    assert build_signature(a).fingerprint == build_signature(a).fingerprint
