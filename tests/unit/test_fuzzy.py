"""The call loop on the scripted backend: typed results, prompts, retries, records, configuration."""

from __future__ import annotations

import json
import time
from typing import Literal

import pytest
from pydantic import BaseModel, Field, field_validator

import lmdsl
from lmdsl.lm.types import Completion, Request, Usage


@lmdsl.fuzzy
def sentiment(review: str) -> Literal["positive", "negative"]:
    """Classify the sentiment of a movie review."""


@lmdsl.fuzzy(retries=1)
def count_words(text: str) -> int:
    """Count the words in the text."""


class Answer(BaseModel):
    answer: str = Field(description="a short factoid answer, 1-5 words")

    @field_validator("answer")
    @classmethod
    def short(cls, value: str) -> str:
        if len(value.split()) > 5:
            raise ValueError("the answer must be at most 5 words")
        return value


@lmdsl.fuzzy(strategy=lmdsl.chain_of_thought, retries=2)
def answer(question: str, context: list[str]) -> Answer:
    """Answer the question using only the context."""


def scripted(*replies: str | dict[str, object] | Completion) -> lmdsl.ScriptedModel:
    return lmdsl.ScriptedModel(list(replies))


def test_results_have_the_annotated_types() -> None:
    model = scripted(
        {"sentiment": "negative"},
        {"count_words": 7},
        {"reasoning": "The context names Paris.", "answer": "Paris"},
    )
    with lmdsl.using(model=model):
        label = sentiment("A dull, lifeless film.")
        words = count_words(text="one two three four five six seven")
        reply = answer(question="Capital of France?", context=["Paris is the capital of France."])
    assert label == "negative"
    assert isinstance(words, int) and words == 7
    assert isinstance(reply, Answer) and reply.answer == "Paris"
    assert lmdsl.history()[-1].reasoning == "The context names Paris."


def test_prompt_holds_instructions_fields_schema_and_input() -> None:
    model = scripted({"sentiment": "positive"})
    with lmdsl.using(model=model):
        sentiment(review="Moving and funny.")
    (request,) = model.requests
    system, user = request.messages
    assert system.role == "system" and user.role == "user"
    assert system.content.startswith("Classify the sentiment of a movie review.")
    assert "- review (str)" in system.content
    assert system.content.endswith('Reply with one JSON object of this shape.\n{"sentiment": "positive" | "negative"}')
    assert request.json_schema is not None
    assert json.loads(request.json_schema)["properties"]["sentiment"]["enum"] == ["positive", "negative"]
    assert user.content == "review: Moving and funny."
    assert request.prefix_length == 1
    assert request.temperature == 0.0


def test_output_shape_is_a_readable_sketch_with_descriptions_as_comments() -> None:
    assert answer.output_format.shape == (
        '{\n  "reasoning": string,\n  "answer": string // a short factoid answer, 1-5 words\n}'
    )
    assert count_words.output_format.shape == '{"count_words": integer}'

    class Item(BaseModel):
        name: str
        size: int | None = None

    @lmdsl.fuzzy
    def items(text: str) -> dict[str, list[Item]]:
        """List items by category."""

    assert items.output_format.shape == (
        '{"items": {"<key>": [{\n    "name": string,\n    "size": integer | null // optional\n  }, ...], ...}}'
    )


def test_demos_become_user_and_assistant_turns_built_once_per_params() -> None:
    sentiment.params = lmdsl.Params(
        instructions="Is the review positive or negative?",
        demos=(
            lmdsl.Demo({"review": "Loved it."}, "positive"),
            lmdsl.Demo({"review": "Awful."}, "negative"),
        ),
    )
    try:
        model = scripted({"sentiment": "positive"}, {"sentiment": "negative"})
        with lmdsl.using(model=model):
            sentiment("Great cast.")
            sentiment("Boring.")
        first, second = model.requests
        roles = [m.role for m in first.messages]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
        assert first.messages[0].content.startswith("Is the review positive or negative?")
        assert first.messages[1].content == "review: Loved it."
        assert json.loads(first.messages[2].content) == {"sentiment": "positive"}
        assert first.prefix_length == 5
        assert all(a is b for a, b in zip(first.messages[:5], second.messages[:5]))
    finally:
        sentiment.reset_params()
    assert sentiment.params.demos == ()


def test_demos_are_validated_against_the_signature() -> None:
    with pytest.raises(lmdsl.InputError, match="unknown input field 'text'"):
        sentiment.params = lmdsl.Params("x", (lmdsl.Demo({"text": "Loved it."}, "positive"),))
    with pytest.raises(lmdsl.InputError, match="does not fit the return type"):
        sentiment.params = lmdsl.Params("x", (lmdsl.Demo({"review": "Loved it."}, "great"),))
    answer.params = lmdsl.Params("x", (lmdsl.Demo({"question": "q", "context": ["c"]}, {"answer": "a"}, "r"),))
    try:
        assert isinstance(answer.params.demos[0].output, Answer)
    finally:
        answer.reset_params()


def test_invalid_output_is_retried_with_the_error_fed_back() -> None:
    model = scripted({"sentiment": "mixed"}, {"sentiment": "positive"})
    with lmdsl.using(model=model):
        assert sentiment("Fine.") == "positive"
    retry = model.requests[1]
    assert retry.messages[-2].role == "assistant"
    assert retry.messages[-2].content == '{"sentiment": "mixed"}'
    assert retry.messages[-1].role == "user"
    assert "Input should be 'positive' or 'negative'" in retry.messages[-1].content
    record = lmdsl.history()[-1]
    assert [a.error is None for a in record.attempts] == [False, True]


def test_pydantic_validator_errors_are_fed_back() -> None:
    model = scripted(
        {"reasoning": "r", "answer": "it is the city of Paris in France"},
        {"reasoning": "r", "answer": "Paris"},
    )
    with lmdsl.using(model=model):
        assert answer(question="q", context=["c"]).answer == "Paris"
    assert "the answer must be at most 5 words" in model.requests[1].messages[-1].content


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("this is not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"words": 3}', 'must have the key "count_words"'),
        ('{"count_words": "many"}', "count_words: Input should be a valid integer"),
    ],
)
def test_exhausted_retries_raise_output_error_with_every_attempt(bad: str, fragment: str) -> None:
    replies = [Completion(bad, Usage(10, 3)), Completion(bad, Usage(12, 4))]
    with lmdsl.using(model=lmdsl.ScriptedModel(replies)), pytest.raises(lmdsl.OutputError) as caught:
        count_words("a b c")
    error = caught.value
    assert error.function == "count_words"
    assert len(error.attempts) == 2  # retries=1
    assert [a.text for a in error.attempts] == [bad, bad]
    assert all(a.error and fragment in a.error for a in error.attempts)
    assert [a.usage for a in error.attempts] == [Usage(10, 3), Usage(12, 4)]
    assert lmdsl.history()[-1].error is not None


def test_a_reply_cut_off_at_max_tokens_is_retried_with_more_room() -> None:
    model = scripted(Completion('{"count_wo', finish_reason="length"), {"count_words": 3})
    with lmdsl.using(model=model):
        assert count_words("a b c") == 3
    first, second = model.requests
    assert second.max_tokens == 2 * first.max_tokens
    assert "cut off at max_tokens" in second.messages[-1].content


def test_max_tokens_is_sized_from_the_schema() -> None:
    model = scripted({"sentiment": "positive"}, {"count_words": 1}, {"reasoning": "r", "answer": "a"})
    with lmdsl.using(model=model):
        sentiment("x")
        count_words("x")
        answer(question="q", context=[])
    literal, integer, free_text = (r.max_tokens for r in model.requests)
    assert literal < 64 and integer < 64
    assert free_text > 200


def test_usage_is_counted_per_function() -> None:
    count_words._usage.reset()
    replies = [Completion("oops", Usage(20, 2)), Completion('{"count_words": 2}', Usage(25, 5))]
    with lmdsl.using(model=lmdsl.ScriptedModel(replies)):
        count_words("a b")
    totals = count_words.usage
    assert (totals.calls, totals.lm_calls, totals.failures) == (1, 2, 0)
    assert totals.usage == Usage(45, 7)


def test_history_and_last_prompt_show_the_exact_messages() -> None:
    with lmdsl.using(model=scripted({"sentiment": "positive"})):
        sentiment("Lovely.")
    messages = lmdsl.last_prompt()
    assert messages[-1].content == "review: Lovely."
    text = lmdsl.history(1)[0].format()
    assert "review: Lovely." in text and '{"sentiment": "positive"}' in text


def test_capture_collects_calls_of_a_block() -> None:
    with lmdsl.using(model=scripted({"sentiment": "positive"}, {"count_words": 1})), lmdsl.capture() as calls:
        sentiment("a")
        count_words("b")
    assert [c.function for c in calls] == ["sentiment", "count_words"]


def test_model_resolution_order() -> None:
    pinned = scripted({"pinned_sentiment": "positive"})

    @lmdsl.fuzzy(model=pinned)
    def pinned_sentiment(review: str) -> Literal["positive", "negative"]:
        """Classify the sentiment."""

    default = scripted({"pinned_sentiment": "negative"})
    override = scripted({"pinned_sentiment": "negative"})
    lmdsl.configure(model=default)
    try:
        assert pinned_sentiment("x") == "positive"  # its own model beats the default
        with lmdsl.using(model=override):
            assert pinned_sentiment("x") == "negative"  # a using block beats everything
        assert len(pinned.requests) == 1 and len(override.requests) == 1 and not default.requests
    finally:
        lmdsl.configure(model="local")


def test_configured_temperature_and_max_tokens_reach_the_request() -> None:
    model = scripted({"sentiment": "positive"})
    with lmdsl.using(model=model, temperature=0.7, max_tokens=99):
        sentiment("x")
    assert (model.requests[0].temperature, model.requests[0].max_tokens) == (0.7, 99)


def test_configuration_errors() -> None:
    with pytest.raises(lmdsl.ConfigurationError, match="unknown option"):
        lmdsl.configure(colour="red")
    with pytest.raises(lmdsl.ConfigurationError, match="unknown model string 'gpt5'"):
        with lmdsl.using(model="gpt5"):
            sentiment("x")
    with pytest.raises(lmdsl.ModelUnavailableError, match="no model file at"):
        with lmdsl.using(model="local:/nonexistent/model.gguf"):
            sentiment("x")


def test_wrong_call_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'text'"):
        sentiment(text="x")  # type: ignore[call-arg]


def test_scripted_function_replies_see_the_request() -> None:
    def reply(request: Request) -> dict[str, object]:
        words = request.messages[-1].content.removeprefix("text: ").split()
        return {"count_words": len(words)}

    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        assert count_words("one two three") == 3
        assert count_words("one") == 1


def test_a_functions_own_temperature_reaches_the_request_and_beats_the_configured_one() -> None:
    @lmdsl.fuzzy(temperature=0.9)
    def warm(text: str) -> str:
        """Rephrase the text."""

    model = lmdsl.ScriptedModel([{"warm": "a"}, {"warm": "b"}])
    with lmdsl.using(model=model):
        warm("x")
        with lmdsl.using(temperature=0.2):
            warm("y")
    assert [r.temperature for r in model.requests] == [0.9, 0.9]


def test_a_chain_of_thought_reply_without_reasoning_is_rejected_and_retried() -> None:
    model = lmdsl.ScriptedModel(
        [{"answer": "Paris"}, {"reasoning": 7, "answer": "Paris"}, {"reasoning": "r", "answer": "Paris"}]
    )
    with lmdsl.using(model=model):
        record = answer.invoke({"question": "Capital?", "context": ["Paris is the capital."]})
    assert record.output == Answer(answer="Paris") and record.reasoning == "r"
    assert [a.error for a in record.attempts] == [
        'the reply must start with a "reasoning" string',
        'the reply must start with a "reasoning" string',
        None,
    ]


def test_demos_set_in_code_are_checked_and_keep_their_reasoning() -> None:
    context = ["Paris is the capital."]
    good = lmdsl.Demo({"question": "Capital?", "context": context}, Answer(answer="Paris"), "The context says so.")
    answer.params = lmdsl.Params("Answer.", (good,))
    try:
        assert answer.params.demos[0].reasoning == "The context says so."
        assert answer.prompt_prefix[2].content == '{"reasoning": "The context says so.", "answer": "Paris"}'
        bad_output = lmdsl.Demo({"question": "Capital?", "context": context}, {"answer": "Par\ud800is"})
        with pytest.raises(lmdsl.InputError, match=r"answer: a demo's output\.answer: it is not valid Unicode"):
            answer.params = lmdsl.Params("Answer.", (bad_output,))
        bad_reasoning = lmdsl.Demo({"question": "Capital?", "context": context}, Answer(answer="Paris"), "\udc00")
        with pytest.raises(lmdsl.InputError, match="answer: a demo's reasoning: it is not valid Unicode"):
            answer.params = lmdsl.Params("Answer.", (bad_reasoning,))
        with pytest.raises(lmdsl.InputError, match="answer: a demo's missing input field 'context'") as caught:
            answer.params = lmdsl.Params("Answer.", (lmdsl.Demo({"question": "Capital?"}, Answer(answer="Paris")),))
        assert caught.value.field == "context"
    finally:
        answer.reset_params()


def test_the_rollout_reaches_the_request_and_records_time_their_call() -> None:
    model = lmdsl.ScriptedModel([{"count_words": 2}, "not json", "not json"])
    started = time.perf_counter()
    with lmdsl.using(model=model, rollout=3):
        count_words("two words")
        with pytest.raises(lmdsl.OutputError):
            count_words("again")
    elapsed = time.perf_counter() - started
    assert [r.rollout for r in model.requests] == [3, 3, 3]
    ok, failed = lmdsl.history(2)
    assert 0 <= ok.seconds <= elapsed and 0 <= failed.seconds <= elapsed  # an upper bound measured around the calls
    assert (ok.model, failed.model) == ("scripted", "scripted") and failed.error is not None
