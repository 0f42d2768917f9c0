"""`fn.ensure` checks and context-aware pydantic validators, on the scripted backend."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import Any, Literal, cast

import pytest
from pydantic import BaseModel, ValidationInfo, field_validator, model_validator

import lmdsl
from lmdsl.strategies.base import Generation


def inputs_of(info: ValidationInfo) -> Mapping[str, Any]:
    """The call's inputs, which lmdsl passes to pydantic as the validation context."""
    return cast("Mapping[str, Any]", info.context)


class Answer(BaseModel):
    answer: str
    confidence: float


class Quote(BaseModel):
    """An output whose validators read the call's inputs through `info.context`."""

    quote: str

    @field_validator("quote")
    @classmethod
    def verbatim(cls, value: str, info: ValidationInfo) -> str:
        CONTEXTS.append(info.context)
        if value not in inputs_of(info)["source"]:
            raise lmdsl.Retry("the quote must appear verbatim in the source")
        return value


class Span(BaseModel):
    start: int
    end: int

    @model_validator(mode="after")
    def inside(self, info: ValidationInfo) -> Span:
        text = inputs_of(info)["text"]
        if not 0 <= self.start < self.end <= len(text):
            raise ValueError(f"the span must lie within the text of length {len(text)}")
        return self


CONTEXTS: list[object] = []


def scripted(*replies: str | dict[str, object]) -> lmdsl.ScriptedModel:
    return lmdsl.ScriptedModel(list(replies))


def make_title(retries: int = 2) -> lmdsl.FuzzyFunction[[str, int], str]:
    """A fresh fuzzy function per test, so checks registered by one test do not leak into another."""

    @lmdsl.fuzzy(retries=retries)
    def title(text: str, max_words: int) -> str:
        """Write a title for the text."""

    return title


# -- what a check receives ----------------------------------------------------------------------


def test_a_check_gets_the_typed_output_and_only_the_inputs_it_names() -> None:
    @lmdsl.fuzzy
    def answer(question: str, context: list[str], depth: int) -> Answer:
        """Answer the question from the context."""

    received: list[tuple[object, dict[str, object]]] = []

    @answer.ensure
    def confident(output: Answer, *, question: str) -> None:
        received.append((output, {"question": question}))

    @answer.ensure
    def deep_enough(output: Answer, depth: int, **rest: object) -> None:
        received.append((output, {"depth": depth, **rest}))

    assert confident.__name__ == "confident"  # the decorator hands the check back unchanged
    with lmdsl.using(model=scripted({"answer": "Paris", "confidence": 0.9})):
        result = answer("Capital of France?", ["Paris is the capital."], 2)
    assert result == Answer(answer="Paris", confidence=0.9)
    (first_output, first_kwargs), (second_output, second_kwargs) = received
    assert isinstance(first_output, Answer) and first_output is result
    assert first_kwargs == {"question": "Capital of France?"}
    # a **kwargs parameter receives every input; a named one receives its own
    assert second_output is result
    assert second_kwargs == {"depth": 2, "question": "Capital of France?", "context": ["Paris is the capital."]}


def test_a_check_sees_the_validated_value_not_the_raw_json() -> None:
    @lmdsl.fuzzy
    def count(text: str) -> int:
        """Count the words."""

    seen: list[object] = []
    count.ensure(lambda output: seen.append(output))
    with lmdsl.using(model=scripted('{"count": "3"}')):
        assert count("a b c") == 3
    assert seen == [3] and isinstance(seen[0], int)


# -- rejection and retry ----------------------------------------------------------------------


def test_retry_feeds_the_message_back_and_accepts_the_next_good_output() -> None:
    title = make_title()

    @title.ensure
    def short(output: str, *, max_words: int) -> None:
        if len(output.split()) > max_words:
            raise lmdsl.Retry(f"the title must have at most {max_words} words")

    model = scripted({"title": "A very long title indeed"}, {"title": "Short title"})
    with lmdsl.using(model=model):
        assert title("Some text.", 2) == "Short title"
    first, retry = model.requests
    assert retry.messages[:-2] == first.messages
    assert retry.messages[-2].role == "assistant"
    assert json.loads(retry.messages[-2].content) == {"title": "A very long title indeed"}
    assert retry.messages[-1].role == "user"
    assert "the title must have at most 2 words" in retry.messages[-1].content
    record = lmdsl.history(1)[0]
    assert record.output == "Short title"
    assert [a.error for a in record.attempts] == ["the title must have at most 2 words", None]
    assert record.error is None and not record.details


def test_exhausted_hard_check_raises_assertion_failed_with_every_attempt() -> None:
    title = make_title(retries=2)

    @title.ensure
    def never(output: str) -> None:
        raise lmdsl.Retry("no titles allowed")

    replies = [{"title": "one"}, {"title": "two"}, {"title": "three"}]
    with lmdsl.using(model=lmdsl.ScriptedModel(list(replies))), pytest.raises(lmdsl.AssertionFailed) as caught:
        title("text", 3)
    error = caught.value
    assert isinstance(error, lmdsl.OutputError)
    assert error.function == "make_title.<locals>.title"
    assert error.message == "no titles allowed"
    assert "no titles allowed" in str(error) and "3 attempt(s)" in str(error)
    assert [json.loads(a.text) for a in error.attempts] == replies
    assert [a.error for a in error.attempts] == ["no titles allowed"] * 3
    record = lmdsl.history(1)[0]
    assert record.output is None and record.error == str(error) and len(record.attempts) == 3


def test_exhausted_soft_check_warns_and_keeps_the_last_valid_output() -> None:
    title = make_title(retries=1)

    @title.ensure(soft=True)
    def lowercase(output: str) -> None:
        if output != output.lower():
            raise lmdsl.Retry("write the title in lower case")

    model = scripted({"title": "First Try"}, {"title": "Second Try"})
    with lmdsl.using(model=model), pytest.warns(lmdsl.AssertionWarning, match="write the title in lower case"):
        assert title("text", 5) == "Second Try"
    assert len(model.requests) == 2
    record = lmdsl.history(1)[0]
    assert record.error is None and record.output == "Second Try"
    assert record.details["soft_failure"] == "write the title in lower case"
    assert [a.error for a in record.attempts] == ["write the title in lower case"] * 2


def test_a_soft_check_that_passes_on_retry_does_not_warn() -> None:
    title = make_title(retries=1)

    @title.ensure(soft=True)
    def lowercase(output: str) -> None:
        if not output.islower():
            raise lmdsl.Retry("write the title in lower case")

    with lmdsl.using(model=scripted({"title": "Upper"}, {"title": "lower"})), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert title("text", 5) == "lower"
    assert "soft_failure" not in lmdsl.history(1)[0].details


def test_checks_run_in_registration_order_and_the_first_failure_is_fed_back() -> None:
    title = make_title(retries=2)
    calls: list[str] = []

    @title.ensure
    def not_empty(output: str) -> None:
        calls.append(f"not_empty({output})")
        if not output.strip():
            raise lmdsl.Retry("the title is empty")

    @title.ensure
    def short(output: str, *, max_words: int) -> None:
        calls.append(f"short({output})")
        if len(output.split()) > max_words:
            raise lmdsl.Retry("the title is too long")

    model = scripted({"title": "far too many words"}, {"title": " "}, {"title": "ok"})
    with lmdsl.using(model=model):
        assert title("text", 2) == "ok"
    # the first reply fails only the second check; the second reply fails the first (so the
    # second never runs); the third passes both, in order
    assert calls == [
        "not_empty(far too many words)",
        "short(far too many words)",
        "not_empty( )",
        "not_empty(ok)",
        "short(ok)",
    ]
    assert "the title is too long" in model.requests[1].messages[-1].content
    assert "the title is empty" in model.requests[2].messages[-1].content
    assert "too long" not in model.requests[2].messages[-1].content


def test_a_check_that_crashes_propagates_unchanged_without_a_retry() -> None:
    title = make_title(retries=2)
    lookup: dict[str, int] = {}

    @title.ensure
    def buggy(output: str) -> None:
        lookup[output]  # a KeyError: a bug in the check, not bad model output

    model = scripted({"title": "t"}, {"title": "t"}, {"title": "t"})
    with lmdsl.using(model=model), pytest.raises(KeyError) as caught:
        title("text", 3)
    assert caught.type is KeyError and caught.value.args == ("t",)
    assert len(model.requests) == 1


# -- registration errors --------------------------------------------------------------------


def test_a_check_naming_a_non_input_is_a_signature_error_with_a_hint() -> None:
    title = make_title()

    def check(output: str, *, max_wrods: int) -> None: ...

    with pytest.raises(lmdsl.SignatureError, match=r"'max_wrods' is not an input .*did you mean \"max_words\"\?"):
        title.ensure(check)

    def unrelated(output: str, *, colour: str) -> None: ...

    with pytest.raises(lmdsl.SignatureError, match="'colour' is not an input") as caught:
        title.ensure(soft=True)(unrelated)
    assert "did you mean" not in str(caught.value)
    assert "text, max_words" in str(caught.value)
    # nothing was registered by the failed attempts
    with lmdsl.using(model=scripted({"title": "fine"})):
        assert title("x", 1) == "fine"


def test_a_check_whose_first_parameter_is_keyword_only_is_a_signature_error() -> None:
    title = make_title()

    def check(*, output: str) -> None: ...

    with pytest.raises(lmdsl.SignatureError, match="first parameter must take the output positionally"):
        title.ensure(check)

    def no_parameters() -> None: ...

    with pytest.raises(lmdsl.SignatureError, match="first parameter"):
        title.ensure(no_parameters)


# -- pydantic validators reading the inputs -------------------------------------------------


def test_a_field_validator_reads_the_inputs_through_the_context_and_may_raise_retry() -> None:
    @lmdsl.fuzzy
    def quote(source: str, topic: str) -> Quote:
        """Quote the sentence of the source about the topic."""

    CONTEXTS.clear()
    model = scripted({"quote": "made up"}, {"quote": "cats purr"})
    with lmdsl.using(model=model):
        result = quote("Dogs bark. cats purr.", "cats")
    assert isinstance(result, Quote) and result.quote == "cats purr"
    assert CONTEXTS == [{"source": "Dogs bark. cats purr.", "topic": "cats"}] * 2
    assert "the quote must appear verbatim in the source" in model.requests[1].messages[-1].content
    assert json.loads(model.requests[1].messages[-2].content) == {"quote": "made up"}


def test_a_model_validator_reads_the_context_and_exhaustion_is_an_output_error() -> None:
    @lmdsl.fuzzy(retries=1)
    def find(text: str) -> Span:
        """Find the span of the name in the text."""

    model = scripted({"start": 2, "end": 1}, {"start": 0, "end": 3})
    with lmdsl.using(model=model):
        span = find("abcdef")
    assert isinstance(span, Span) and (span.start, span.end) == (0, 3)
    assert "the span must lie within the text of length 6" in model.requests[1].messages[-1].content
    replies = [{"start": 0, "end": 30}, {"start": 5, "end": 99}]
    with lmdsl.using(model=lmdsl.ScriptedModel(list(replies))), pytest.raises(lmdsl.OutputError) as caught:
        find("abcdef")
    assert type(caught.value) is lmdsl.OutputError  # a validator is not an ensure check
    assert all(a.error and "within the text of length 6" in a.error for a in caught.value.attempts)
    assert len(caught.value.attempts) == 2


def test_a_demo_output_is_validated_with_its_inputs_as_context() -> None:
    @lmdsl.fuzzy
    def quote(source: str, topic: str) -> Quote:
        """Quote the sentence of the source about the topic."""

    quote.params = lmdsl.Params("Quote.", (lmdsl.Demo({"source": "A b. C d.", "topic": "c"}, {"quote": "C d."}),))
    output = quote.params.demos[0].output
    assert isinstance(output, Quote) and output.quote == "C d."
    with pytest.raises(lmdsl.InputError):
        quote.params = lmdsl.Params("Quote.", (lmdsl.Demo({"source": "A b.", "topic": "c"}, {"quote": "zz"}),))


# -- parse failures mixed with check failures -------------------------------------------------


def test_when_the_last_attempt_fails_to_parse_the_error_is_an_output_error() -> None:
    title = make_title(retries=1)

    @title.ensure
    def never(output: str) -> None:
        raise lmdsl.Retry("rejected by the check")

    with lmdsl.using(model=scripted({"title": "valid"}, "not json")), pytest.raises(lmdsl.OutputError) as caught:
        title("text", 3)
    assert type(caught.value) is lmdsl.OutputError
    first, last = caught.value.attempts
    assert first.error == "rejected by the check"
    assert last.error is not None and "not valid JSON" in last.error


def test_when_the_last_attempt_fails_a_check_the_error_is_assertion_failed() -> None:
    title = make_title(retries=1)

    @title.ensure
    def never(output: str) -> None:
        raise lmdsl.Retry("rejected by the check")

    with lmdsl.using(model=scripted("not json", {"title": "valid"})), pytest.raises(lmdsl.AssertionFailed) as caught:
        title("text", 3)
    first, last = caught.value.attempts
    assert first.error is not None and "not valid JSON" in first.error
    assert last.error == "rejected by the check"
    assert caught.value.message == "rejected by the check"


def test_checks_do_not_run_on_output_that_fails_validation() -> None:
    @lmdsl.fuzzy(retries=1)
    def label(text: str) -> Literal["a", "b"]:
        """Label it."""

    seen: list[Any] = []
    label.ensure(lambda output: seen.append(output))
    with lmdsl.using(model=scripted({"label": "c"}, {"label": "b"})):
        assert label("x") == "b"
    assert seen == ["b"]


def test_a_check_that_returns_false_rejects_the_output() -> None:
    @lmdsl.fuzzy(retries=1)
    def count(text: str) -> int:
        """Count the words."""

    count.ensure(lambda out: out > 0)
    model = lmdsl.ScriptedModel([{"count": 0}, {"count": 2}])
    with lmdsl.using(model=model):
        assert count("a b") == 2
    assert "fails the check" in model.requests[1].messages[-1].content


class _Handmade(lmdsl.Strategy):
    """A strategy that builds its output without the call loop (as tools or code do)."""

    def run(self, run: lmdsl.Run) -> Generation:
        return Generation(int(run.inputs["n"]) * 2, None, ())


def test_checks_run_on_a_custom_strategys_final_output() -> None:
    @lmdsl.fuzzy(strategy=_Handmade())
    def double(n: int) -> int:
        """Double the number."""

    @double.ensure
    def small(out: int) -> None:
        if out > 10:
            raise lmdsl.Retry("too big")

    assert double(3) == 6
    with pytest.raises(lmdsl.AssertionFailed, match="too big"):
        double(6)


def test_a_soft_check_on_a_custom_strategy_warns_and_keeps_the_output() -> None:
    @lmdsl.fuzzy(strategy=_Handmade())
    def double(n: int) -> int:
        """Double the number."""

    double.ensure(lambda out: out <= 10, soft=True)
    with pytest.warns(lmdsl.AssertionWarning, match="double"):
        assert double(6) == 12
