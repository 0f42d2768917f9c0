"""`labelled_demo`: which labelled examples become demos, read how, and which are passed over."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

import lmdsl
from lmdsl.compiler.base import labelled_demo, with_demos


class Verdict(BaseModel):
    label: Literal["spam", "ham"]
    confidence: float = 1.0


@lmdsl.fuzzy
def judge(message: str) -> Verdict:
    """Judge whether the message is spam."""


@lmdsl.fuzzy
def tag(message: str) -> Literal["spam", "ham"]:
    """Tag the message as spam or ham."""


def test_an_example_without_every_input_gives_no_demo() -> None:
    assert labelled_demo(tag, lmdsl.Example(text="buy now", tag="spam"), ["tag"]) is None


def test_a_label_named_like_the_output_key_is_the_demo_output() -> None:
    demo = labelled_demo(tag, lmdsl.Example(message="hello mum", tag="ham"), [])
    assert demo == lmdsl.Demo({"message": "hello mum"}, "ham")


def test_a_model_output_is_assembled_from_the_fields_it_names() -> None:
    """Every required field of the output model is present, so the model's fields are read from the
    example (an optional one too, when there); other labels are ignored."""
    example = lmdsl.Example(message="buy now", label="spam", confidence=0.25, source="inbox")
    demo = labelled_demo(judge, example, ["label", "confidence", "source"])
    assert demo == lmdsl.Demo({"message": "buy now"}, Verdict(label="spam", confidence=0.25))

    without_optional = labelled_demo(judge, lmdsl.Example(message="hi", label="ham"), [])
    assert without_optional == lmdsl.Demo({"message": "hi"}, Verdict(label="ham", confidence=1.0))


def test_a_model_output_missing_a_required_field_falls_back_to_the_only_label() -> None:
    assert labelled_demo(judge, lmdsl.Example(message="hi", confidence=0.5), []) is None
    demo = labelled_demo(judge, lmdsl.Example(message="hi", verdict={"label": "ham"}), ["verdict"])
    assert demo == lmdsl.Demo({"message": "hi"}, Verdict(label="ham"))


def test_the_only_label_is_the_output_when_nothing_else_names_it() -> None:
    demo = labelled_demo(tag, lmdsl.Example(message="win a prize", gold="spam"), ["gold"])
    assert demo == lmdsl.Demo({"message": "win a prize"}, "spam")
    assert labelled_demo(tag, lmdsl.Example(message="win a prize", gold="spam", other="ham"), []) is None


def test_a_label_that_does_not_fit_the_return_type_gives_no_demo() -> None:
    assert labelled_demo(tag, lmdsl.Example(message="hello", tag="maybe"), []) is None
    assert labelled_demo(judge, lmdsl.Example(message="hello", label="eggs"), []) is None


def test_with_demos_keeps_the_current_instructions_unless_given_new_ones() -> None:
    demos = (lmdsl.Demo({"message": "hi"}, "ham"),)
    assert with_demos(tag, demos) == lmdsl.Params("Tag the message as spam or ham.", demos)
    assert with_demos(tag, demos, "Be strict.") == lmdsl.Params("Be strict.", demos)
    assert with_demos(tag, [], "") == lmdsl.Params("", ())
