"""Programs on the scripted backend: traces, parameters, save/load, backtracking assertions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.lm.types import Request


class Query(BaseModel):
    query: str


@lmdsl.fuzzy
def next_query(question: str, notes: list[str]) -> Query:
    """Write a search query that finds what the notes still lack."""


@lmdsl.fuzzy
def answer(question: str, notes: list[str]) -> str:
    """Answer the question from the notes."""


@lmdsl.fuzzy
def grade(answer: str) -> Literal["good", "bad"]:
    """Grade the answer."""


CORPUS = {"capital": "Paris is the capital of France.", "river": "The Seine flows through Paris."}


def search(query: str) -> list[str]:
    return [text for key, text in CORPUS.items() if key in query]


@lmdsl.program
def multihop(question: str) -> str:
    notes: list[str] = []
    for _ in range(2):
        notes += search(next_query(question=question, notes=notes).query)
    return answer(question=question, notes=notes)


@lmdsl.program
def checked(question: str) -> str:
    reply = multihop(question)  # a nested program
    lmdsl.require(len(reply.split()) <= 3, "Answer in at most three words.")
    return reply


def by_function(replies: dict[str, list[object]]) -> lmdsl.ScriptedModel:
    """Replies per fuzzy function, recognised by the output key in the request's schema;
    a non-dict value is wrapped under that key, as the model would write it."""
    queues = {name: list(values) for name, values in replies.items()}

    def respond(request: Request) -> str:
        schema = request.json_schema or ""
        for name, queue in queues.items():
            if f'"{name}"' in schema or (name == "next_query" and '"query"' in schema):
                value = queue.pop(0)
                return json.dumps(value if isinstance(value, dict) else {name: value})
        raise AssertionError(f"no reply scripted for {request.json_schema}")

    return lmdsl.ScriptedModel(respond)


def test_a_program_run_traces_every_fuzzy_call_in_order() -> None:
    model = by_function({"next_query": [{"query": "capital"}, {"query": "river"}], "answer": ["Paris"]})
    with lmdsl.using(model=model):
        result = multihop.run("Which city is the capital of France?")
    assert result.output == "Paris"
    assert [step.function for step in result.trace] == [next_query, next_query, answer]
    assert result.trace[1].record.inputs["notes"] == [CORPUS["capital"]]
    assert result.trace[2].record.inputs["notes"] == [CORPUS["capital"], CORPUS["river"]]
    assert result.backtracks == 0


def test_functions_are_found_in_order_including_nested_programs() -> None:
    assert list(multihop.functions) == ["next_query", "answer"]
    assert list(checked.functions) == ["multihop.next_query", "multihop.answer"]
    assert checked.functions["multihop.answer"] is answer


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    answer.params = lmdsl.Params("Answer briefly.", (lmdsl.Demo({"question": "q?", "notes": ["n"]}, "a"),))
    try:
        multihop.save(path)
        data = json.loads(path.read_text())
        assert data["functions"]["answer"]["demos"] == [
            {"inputs": {"question": "q?", "notes": ["n"]}, "output": "a", "reasoning": None}
        ]
        answer.reset_params()
        multihop.load(path)
        assert answer.params.instructions == "Answer briefly."
        assert answer.params.demos[0].output == "a"
        assert next_query.params.instructions == next_query.signature.instructions
    finally:
        answer.reset_params()


def test_loading_a_file_for_another_program_names_the_function(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    multihop.save(path)

    @lmdsl.program
    def other(question: str) -> str:
        return grade(answer(question=question, notes=[]))

    with pytest.raises(lmdsl.ArtifactError, match="'grade' is not in the file"):
        other.load(path)


def test_loading_a_stale_file_names_the_changed_function(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    multihop.save(path)
    data = json.loads(path.read_text())
    data["functions"]["answer"]["signature"] = "0" * 16
    path.write_text(json.dumps(data))
    with pytest.raises(lmdsl.ArtifactError, match="'answer' changed since the file was written"):
        multihop.load(path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"format": "lmdsl-params/1", "program": "x", "funct', "not valid JSON"),
        (b"\x00\xff garbage", "not valid JSON"),
        (b"[1, 2, 3]", "not a parameter file"),
        (b'{"format": "pickle", "program": "x", "functions": {}}', "format 'pickle'"),
        (
            b'{"format": "lmdsl-params/1", "program": "x", "functions": {"answer": {"signature": 1}}}',
            "not a parameter file",
        ),
        (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    ],
)
def test_hostile_or_truncated_files_are_artifact_errors_and_change_nothing(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "params.json"
    path.write_bytes(content)
    before = multihop.params
    with pytest.raises(lmdsl.ArtifactError, match=fragment):
        multihop.load(path)
    assert multihop.params == before


def test_a_demo_that_does_not_fit_is_an_artifact_error_and_nothing_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    multihop.save(path)
    data = json.loads(path.read_text())
    data["functions"]["next_query"]["instructions"] = "changed"
    data["functions"]["answer"]["demos"] = [{"inputs": {"question": "q"}, "output": "a"}]
    path.write_text(json.dumps(data))
    with pytest.raises(lmdsl.ArtifactError, match="'answer'.*missing input field 'notes'"):
        multihop.load(path)
    assert next_query.params.instructions == next_query.signature.instructions


def test_require_backtracks_to_the_most_recent_call_and_reruns_what_follows() -> None:
    @lmdsl.program
    def pipeline(question: str) -> str:
        reply = answer(question=question, notes=[])
        verdict = grade(reply)
        lmdsl.require(verdict == "good", "The grader rejected the answer.")
        return reply

    model = by_function({"answer": ["Paris, which is a lovely city"], "grade": ["bad", "good"]})
    with lmdsl.using(model=model):
        result = pipeline.run("Capital of France?")
    assert result.output == "Paris, which is a lovely city"
    assert result.backtracks == 1
    # answer ran once (replayed on the second pass); grade ran twice, the second time with feedback
    assert [step.function for step in result.trace] == [answer, grade]
    grade_requests = [r for r in model.requests if '"grade"' in (r.json_schema or "")]
    answer_requests = [r for r in model.requests if '"answer"' in (r.json_schema or "")]
    assert len(answer_requests) == 1 and len(grade_requests) == 2
    retried = grade_requests[1].messages
    assert retried[-2].role == "assistant" and json.loads(retried[-2].content) == {"grade": "bad"}
    assert retried[-1].role == "user" and "The grader rejected the answer." in retried[-1].content


def test_backtracking_reruns_later_steps_with_the_new_output() -> None:
    seen: list[str] = []

    @lmdsl.program
    def short_answer(question: str) -> str:
        reply = answer(question=question, notes=[])
        seen.append(reply)
        lmdsl.require(len(reply.split()) <= 2, "Use at most two words.")
        return grade(reply)

    model = by_function({"answer": ["It is Paris in France", "Paris"], "grade": ["good"]})
    with lmdsl.using(model=model):
        result = short_answer.run("Capital of France?")
    assert result.output == "good"
    assert seen == ["It is Paris in France", "Paris"]  # the Python between calls ran again
    assert [step.function for step in result.trace] == [answer, grade]
    assert result.trace[1].record.inputs == {"answer": "Paris"}


def test_a_replayed_call_whose_inputs_changed_runs_afresh_instead_of_returning_the_stale_output() -> None:
    questions = iter(["Capital of France?", "Capital of Italy?"])

    @lmdsl.program
    def drifting(topic: str) -> str:
        reply = answer(question=next(questions), notes=[])  # the Python before the call gives new inputs
        lmdsl.require(grade(reply) == "good", "Rejected.")
        return reply

    model = by_function({"answer": ["Paris", "Rome"], "grade": ["bad", "good"]})
    with lmdsl.using(model=model):
        result = drifting.run("capitals")
    assert result.output == "Rome"
    answered = [r.messages[-1].content for r in model.requests if '"answer"' in (r.json_schema or "")]
    assert answered == ["question: Capital of France?\nnotes: []", "question: Capital of Italy?\nnotes: []"]
    assert result.trace[0].record.inputs == {"question": "Capital of Italy?", "notes": []}


def test_require_raises_assertion_failed_when_backtracks_run_out() -> None:
    @lmdsl.program(max_backtracks=2)
    def stubborn(question: str) -> str:
        reply = answer(question=question, notes=[])
        lmdsl.require(reply == "Paris", "Say Paris.")
        return reply

    model = by_function({"answer": ["Lyon", "Lyon", "Lyon"]})
    with lmdsl.using(model=model), pytest.raises(lmdsl.AssertionFailed, match="Say Paris.") as caught:
        stubborn("Capital?")
    assert len(model.requests) == 3  # the first pass and two backtracks
    assert caught.value.attempts and caught.value.attempts[-1].text == '{"answer": "Lyon"}'


def test_suggest_warns_and_goes_on_when_backtracks_run_out() -> None:
    @lmdsl.program(max_backtracks=1)
    def polite(question: str) -> str:
        reply = answer(question=question, notes=[])
        lmdsl.suggest(reply.endswith("."), "End with a full stop.")
        return reply

    model = by_function({"answer": ["Paris", "Paris"]})
    with lmdsl.using(model=model), pytest.warns(lmdsl.AssertionWarning, match="End with a full stop."):
        assert polite("Capital?") == "Paris"
    assert len(model.requests) == 2


def test_require_outside_a_program_fails_at_once() -> None:
    lmdsl.require(True, "fine")
    with pytest.raises(lmdsl.AssertionFailed, match="nope"):
        lmdsl.require(False, "nope")


def test_a_backtrack_is_not_swallowed_by_except_exception_in_user_code() -> None:
    @lmdsl.program(max_backtracks=1)
    def careless(question: str) -> str:
        reply = answer(question=question, notes=[])
        try:
            lmdsl.require(reply == "Paris", "Say Paris.")
        except Exception:  # noqa: BLE001 - the point of the test
            return "swallowed"
        return reply

    with lmdsl.using(model=by_function({"answer": ["Lyon", "Paris"]})):
        assert careless("Capital?") == "Paris"


def test_program_map_and_acall() -> None:
    @lmdsl.program
    def shout(question: str) -> str:
        return answer(question=question, notes=[]).upper()

    def respond(request: Request) -> dict[str, str]:
        return {"answer": request.messages[-1].content.splitlines()[0].removeprefix("question: ")}

    with lmdsl.using(model=lmdsl.ScriptedModel(respond)):
        outcomes = shout.map([{"question": f"q{i}"} for i in range(6)] + [{"nope": 1}], threads=3)
        assert [o.value for o in outcomes[:6]] == [f"Q{i}" for i in range(6)]
        assert isinstance(outcomes[6].error, lmdsl.InputError)

        async def both() -> list[str]:
            return list(await asyncio.gather(shout.acall("a"), shout.acall("b")))

        assert asyncio.run(both()) == ["A", "B"]


def test_current_trace_inside_a_program() -> None:
    lengths: list[int] = []

    @lmdsl.program
    def probe(question: str) -> str:
        lengths.append(len(lmdsl.current_trace()))
        reply = answer(question=question, notes=[])
        lengths.append(len(lmdsl.current_trace()))
        return reply

    with lmdsl.using(model=by_function({"answer": ["x"]})):
        probe("q")
    assert lengths == [0, 1]
    assert lmdsl.current_trace() == ()
