"""Backtracking, message by message: which call is retried, the exact feedback it gets, which
earlier calls are replayed from the trace and which run afresh, and what happens when the
program's backtracks run out (`require` raises, `suggest` warns and logs)."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

import lmdsl
from lmdsl.lm.types import Request
from lmdsl.program import Program

HEADLINE_SYSTEM = (
    "Write a headline about the topic.\n\nInputs:\n- topic (str)\n\n"
    'Reply with one JSON object of this shape.\n{"headline": string}'
)
PARAGRAPH_SYSTEM = (
    "Write a paragraph under the title.\n\nInputs:\n- title (str)\n\n"
    'Reply with one JSON object of this shape.\n{"paragraph": string}'
)


@lmdsl.fuzzy
def headline(topic: str) -> str:
    """Write a headline about the topic."""


@lmdsl.fuzzy
def slogan(topic: str) -> str:
    """Write a slogan about the topic."""


@lmdsl.fuzzy
def paragraph(title: str) -> str:
    """Write a paragraph under the title."""


@lmdsl.fuzzy(retries=0)
def word_count(topic: str) -> int:
    """Count the words of the topic."""


class Script:
    """Replies per fuzzy function (recognised by the output key of the request's schema), in order;
    `requests` keeps each request with the function it was for."""

    def __init__(self, **replies: list[str]) -> None:
        self.queues = {name: list(texts) for name, texts in replies.items()}
        self.model = lmdsl.ScriptedModel(self.respond)

    def respond(self, request: Request) -> str:
        name = self.function_of(request)
        reply = self.queues[name].pop(0)
        return reply if name == "word_count" else json.dumps({name: reply})

    @staticmethod
    def function_of(request: Request) -> str:
        name: str = next(iter(json.loads(request.json_schema or "{}")["properties"]))
        return name

    def asked(self) -> list[str]:
        return [self.function_of(request) for request in self.model.requests]

    def messages(self, index: int) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.model.requests[index].messages]


passes: list[tuple[lmdsl.TraceStep, ...]] = []


@lmdsl.program
def article(topic: str) -> str:
    title = headline(topic=topic)
    body = paragraph(title=title)
    passes.append(lmdsl.current_trace())
    lmdsl.require(len(body) <= 12, f"Keep it to 12 characters, not {len(body)}.")
    return f"{title}: {body}"


@lmdsl.program(max_backtracks=0)
def impatient(topic: str) -> str:
    body = paragraph(title=topic)
    lmdsl.require(body == "ok", "Say ok.")
    return body


@lmdsl.program(max_backtracks=1)
def polite(topic: str) -> str:
    body = paragraph(title=topic)
    lmdsl.suggest(body.endswith("."), "End with a full stop.")
    return body


@lmdsl.program
def guard(topic: str) -> str:
    lmdsl.require(topic != "", "Need a topic.")
    return paragraph(title=topic)


@lmdsl.program
def hinting(topic: str) -> str:
    lmdsl.suggest(topic.istitle(), "Capitalise the topic.")
    return topic


@pytest.fixture(autouse=True)
def _clean() -> None:
    passes.clear()


def always(reply: str) -> Callable[[Request], str]:
    return lambda request: json.dumps({Script.function_of(request): reply})


# -- the retried call and its feedback --------------------------------------------------------------------


def test_require_retries_the_last_call_with_its_answer_and_the_message() -> None:
    script = Script(headline=["Tides"], paragraph=["The sea rises and falls.", "Sea moves."])
    with lmdsl.using(model=script.model):
        result = article.run("the sea")
    assert result.output == "Tides: Sea moves."
    assert result.backtracks == 1
    assert [(step.function, step.record.output) for step in result.trace] == [
        (headline, "Tides"),
        (paragraph, "Sea moves."),
    ]
    assert script.asked() == ["headline", "paragraph", "paragraph"]
    assert script.messages(0) == [("system", HEADLINE_SYSTEM), ("user", "topic: the sea")]
    assert script.messages(1) == [("system", PARAGRAPH_SYSTEM), ("user", "title: Tides")]
    assert script.messages(2) == [
        ("system", PARAGRAPH_SYSTEM),
        ("user", "title: Tides"),
        ("assistant", '{"paragraph": "The sea rises and falls."}'),
        ("user", "That answer was rejected: Keep it to 12 characters, not 24. Answer again, fixing that."),
    ]
    # the headline of the second pass is the first pass's step itself, replayed without the model
    first, second = passes
    assert second[0] is first[0]
    assert result.trace[0] is first[0]
    assert [step.record.output for step in first] == ["Tides", "The sea rises and falls."]


def test_each_backtrack_shows_only_the_latest_rejected_answer_and_counts() -> None:
    script = Script(headline=["Tides"], paragraph=["One long answer.", "Another long one.", "Short."])
    with lmdsl.using(model=script.model):
        result = article.run("the sea")
    assert (result.output, result.backtracks) == ("Tides: Short.", 2)
    assert script.asked() == ["headline", "paragraph", "paragraph", "paragraph"]
    assert script.messages(3) == [
        ("system", PARAGRAPH_SYSTEM),
        ("user", "title: Tides"),
        ("assistant", '{"paragraph": "Another long one."}'),
        ("user", "That answer was rejected: Keep it to 12 characters, not 17. Answer again, fixing that."),
    ]
    assert [len(trace) for trace in passes] == [2, 2, 2]
    assert passes[1][0] is passes[0][0] and passes[2][0] is passes[0][0]


def test_when_backtracks_run_out_require_raises_with_the_program_and_the_last_attempts() -> None:
    script = Script(headline=["Tides"], paragraph=["One long answer.", "Another long one.", "A third long one."])
    with lmdsl.using(model=script.model), pytest.raises(lmdsl.AssertionFailed) as caught:
        article("the sea")
    assert str(caught.value) == (
        "article: an assertion still failed after 1 attempt(s): Keep it to 12 characters, not 17."
    )
    assert caught.value.message == "Keep it to 12 characters, not 17."
    assert [attempt.text for attempt in caught.value.attempts] == ['{"paragraph": "A third long one."}']
    assert script.asked() == ["headline", "paragraph", "paragraph", "paragraph"]


def test_a_call_after_a_changed_call_runs_afresh_without_feedback() -> None:
    topics = iter(["the sea", "the tide"])

    @lmdsl.program
    def drifting(unused: str) -> str:
        title = headline(topic=next(topics))  # the second pass asks about something else
        body = paragraph(title="Fixed")  # same inputs on both passes, but after the change
        verdict = paragraph(title=body)
        lmdsl.require(verdict == "ok", "Say ok.")
        return f"{title}/{body}/{verdict}"

    script = Script(headline=["Sea", "Tide"], paragraph=["Body one", "no", "Body two", "ok"])
    with lmdsl.using(model=script.model):
        result = drifting.run("x")
    assert result.output == "Tide/Body two/ok"
    assert script.asked() == ["headline", "paragraph", "paragraph", "headline", "paragraph", "paragraph"]
    assert script.messages(3) == [("system", HEADLINE_SYSTEM), ("user", "topic: the tide")]
    assert script.messages(4) == [("system", PARAGRAPH_SYSTEM), ("user", "title: Fixed")]
    assert script.messages(5) == [
        ("system", PARAGRAPH_SYSTEM),
        ("user", "title: Body two"),
        ("assistant", '{"paragraph": "no"}'),
        ("user", "That answer was rejected: Say ok. Answer again, fixing that."),
    ]
    assert [step.record.output for step in result.trace] == ["Tide", "Body two", "ok"]


def test_another_function_with_the_same_inputs_is_not_replayed_in_place_of_the_first() -> None:
    choices = iter([headline, slogan])

    @lmdsl.program
    def switching(topic: str) -> str:
        title = next(choices)(topic=topic)
        body = paragraph(title=title)
        lmdsl.require(body == "ok", "Say ok.")
        return title

    script = Script(headline=["Tides"], slogan=["Ride the tide"], paragraph=["no", "ok"])
    with lmdsl.using(model=script.model):
        result = switching.run("the sea")
    assert result.output == "Ride the tide"
    assert script.asked() == ["headline", "paragraph", "slogan", "paragraph"]
    assert [step.function for step in result.trace] == [slogan, paragraph]
    assert script.messages(3)[-1] == ("user", "That answer was rejected: Say ok. Answer again, fixing that.")


def test_a_call_that_failed_is_run_again_rather_than_replayed() -> None:
    @lmdsl.program
    def tolerant(topic: str) -> str:
        try:
            count = word_count(topic=topic)
        except lmdsl.OutputError:
            count = -1
        body = paragraph(title=f"{topic} ({count})")
        passes.append(lmdsl.current_trace())
        lmdsl.require(body == "ok", "Say ok.")
        return f"{count} {body}"

    script = Script(word_count=["not JSON", '{"word_count": 2}'], paragraph=["no", "ok"])
    with lmdsl.using(model=script.model):
        result = tolerant.run("the sea")
    assert result.output == "2 ok"
    assert script.asked() == ["word_count", "paragraph", "word_count", "paragraph"]
    assert passes[0][0].record.error is not None and passes[0][0].record.output is None
    assert [(step.record.output, step.record.error) for step in result.trace] == [(2, None), ("ok", None)]
    assert script.messages(3) == [
        ("system", PARAGRAPH_SYSTEM),
        ("user", "title: the sea (2)"),
        ("assistant", '{"paragraph": "no"}'),
        ("user", "That answer was rejected: Say ok. Answer again, fixing that."),
    ]


# -- how many backtracks -----------------------------------------------------------------------------------


def _stubborn(topic: str) -> str:
    body = paragraph(title=topic)
    lmdsl.require(body == "ok", "Say ok.")
    return body


@pytest.mark.parametrize(
    "build",
    [
        lambda: lmdsl.program(_stubborn),
        lambda: lmdsl.program()(_stubborn),
        lambda: Program(_stubborn),
    ],
    ids=["bare", "called", "class"],
)
def test_a_program_backtracks_twice_by_default(build: Callable[[], Program[[str], str]]) -> None:
    program = build()
    assert program.max_backtracks == 2
    model = lmdsl.ScriptedModel(always("no"))
    with lmdsl.using(model=model), pytest.raises(lmdsl.AssertionFailed):
        program("t")
    assert len(model.requests) == 3


def test_zero_backtracks_fails_at_the_first_rejection() -> None:
    for program in (
        impatient,
        Program(_stubborn, max_backtracks=0),
        lmdsl.program(_stubborn, max_backtracks=0),  # type: ignore[call-overload]
    ):
        assert program.max_backtracks == 0
        model = lmdsl.ScriptedModel(always("no"))
        with lmdsl.using(model=model), pytest.raises(lmdsl.AssertionFailed, match="after 1 attempt"):
            program("t")
        assert len(model.requests) == 1


def test_max_backtracks_given_with_the_function_is_kept() -> None:
    program = lmdsl.program(_stubborn, max_backtracks=4)  # type: ignore[call-overload]
    model = lmdsl.ScriptedModel(always("no"))
    with lmdsl.using(model=model), pytest.raises(lmdsl.AssertionFailed):
        program("t")
    assert len(model.requests) == 5


# -- assertions with nothing to retry ----------------------------------------------------------------------


def test_require_before_any_fuzzy_call_fails_at_once_naming_the_program() -> None:
    model = lmdsl.ScriptedModel(always("ok"))
    with lmdsl.using(model=model), pytest.raises(lmdsl.AssertionFailed) as caught:
        guard("")
    assert str(caught.value) == "guard: an assertion still failed after 0 attempt(s): Need a topic."
    assert caught.value.attempts == ()
    assert model.requests == []


def test_require_outside_a_program_names_require() -> None:
    with pytest.raises(lmdsl.AssertionFailed) as caught:
        lmdsl.require(0, "Not zero.")
    assert str(caught.value) == "require: an assertion still failed after 0 attempt(s): Not zero."


# -- suggest -------------------------------------------------------------------------------------------------


def test_suggest_retries_then_warns_once_its_backtracks_are_spent(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(paragraph=["No stop", "Still none"])
    with lmdsl.using(model=script.model), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.WARNING, logger="lmdsl"):
            result = polite.run("manners")
    assert (result.output, result.backtracks) == ("Still none", 1)
    assert script.messages(1)[-2:] == [
        ("assistant", '{"paragraph": "No stop"}'),
        ("user", "That answer was rejected: End with a full stop. Answer again, fixing that."),
    ]
    text = "polite: suggestion still fails: End with a full stop."
    assert [(w.category, str(w.message)) for w in caught] == [(lmdsl.AssertionWarning, text)]
    assert Path(caught[0].filename).name != "program.py"  # attributed to the caller, not to lmdsl
    assert caplog.records == []  # said once, as a warning: not logged as well


def test_suggest_before_any_fuzzy_call_warns_at_once_naming_the_program(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(lmdsl.AssertionWarning) as caught, caplog.at_level(logging.WARNING, logger="lmdsl"):
        assert hinting("sea") == "sea"
    text = "hinting: suggestion still fails: Capitalise the topic."
    assert [str(w.message) for w in caught] == [text]
    assert caplog.records == []


def test_suggest_outside_a_program_warns_naming_suggest(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(lmdsl.AssertionWarning) as caught, caplog.at_level(logging.WARNING, logger="lmdsl"):
        lmdsl.suggest([], "Give at least one.")
    text = "suggest: suggestion still fails: Give at least one."
    assert [str(w.message) for w in caught] == [text]
    assert caplog.records == []


# -- what user code sees -------------------------------------------------------------------------------------


def test_code_that_intercepts_a_backtrack_sees_the_assertion_message() -> None:
    seen: list[str] = []

    @lmdsl.program(max_backtracks=1)
    def watched(topic: str) -> str:
        body = paragraph(title=topic)
        try:
            lmdsl.require(body == "ok", "Say ok.")
        except BaseException as unwinding:  # noqa: BLE001 - cleanup code sees it, then lets it go
            seen.append(str(unwinding))
            raise
        return body

    script = Script(paragraph=["no", "ok"])
    with lmdsl.using(model=script.model):
        assert watched("t") == "ok"
    assert seen == ["Say ok."]


def test_a_nested_run_returns_its_output_with_no_trace_and_no_backtracks() -> None:
    inner_results: list[lmdsl.ProgramResult[str]] = []

    @lmdsl.program
    def outer(topic: str) -> str:
        inner = article.run(topic)
        inner_results.append(inner)
        return inner.output.upper()

    script = Script(headline=["Tides"], paragraph=["Far too long here.", "Sea."])
    with lmdsl.using(model=script.model):
        result = outer.run("the sea")
    assert inner_results == [lmdsl.ProgramResult("Tides: Sea.", (), 0)]
    assert result.output == "TIDES: SEA."
    assert result.backtracks == 1  # the outer program did the backtracking
    assert [step.record.output for step in result.trace] == ["Tides", "Sea."]
