"""Examples, loading them, and `evaluate` on the scripted backend: scores, rows, errors, usage, export, progress."""

from __future__ import annotations

import csv
import json
import pickle
import threading
import time
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.data import Example, load_examples
from lmdsl.errors import EvaluationError
from lmdsl.evaluation import EvaluationResult, evaluate
from lmdsl.lm.types import Completion, Request, Usage
from lmdsl.program import TraceStep


@lmdsl.fuzzy
def sentiment(review: str) -> Literal["positive", "negative"]:
    """Classify the sentiment of a movie review."""


class Summary(BaseModel):
    topic: str
    words: int


@lmdsl.fuzzy
def summarize(text: str) -> Summary:
    """Summarize the text: its topic and how many words it has."""


@lmdsl.program
def analyse(review: str) -> str:
    label = sentiment(review)
    summary = summarize(text=review)
    return f"{label}:{summary.topic}"


@lmdsl.program(max_backtracks=1)
def insisting(review: str) -> str:
    label = sentiment(review)
    topic = summarize(text=review).topic
    lmdsl.require(topic != "first", "Do not answer 'first'.")
    return f"{label}:{topic}"


USAGE = Usage(10, 2)  # per LM call, whatever the reply


def the_input(request: Request) -> str:
    """The call's input value (the turn after the prefix; retries and feedback come later)."""
    return request.messages[request.prefix_length].content.split(": ", 1)[1]


def reply(request: Request) -> Completion:
    """Answers that depend on the input: 'good'/'great' are positive; 'garbage' never validates."""
    text = the_input(request)
    if "garbage" in text:
        return Completion("this is not JSON", USAGE)
    properties = json.loads(request.json_schema or "{}")["properties"]
    if "sentiment" in properties:
        label = "positive" if any(word in text.lower() for word in ("good", "great")) else "negative"
        return Completion(json.dumps({"sentiment": label}), USAGE)
    retried = len(request.messages) > request.prefix_length + 1
    topic = "first" if not retried else "film"
    return Completion(json.dumps({"topic": topic if "insist" in text else "film", "words": len(text.split())}), USAGE)


def scripted(*, cacheable: bool = False) -> lmdsl.ScriptedModel:
    return lmdsl.ScriptedModel(reply, cacheable=cacheable)


REVIEWS = [
    ("A great film.", "positive"),
    ("Dull and slow.", "negative"),
    ("Good acting, great score.", "positive"),
    ("I hated every minute.", "positive"),  # labelled wrong on purpose: the model says negative
]


def devset() -> list[Example]:
    return [Example(review=text, label=label) for text, label in REVIEWS]


def correct(example: Example, prediction: str) -> bool:
    return bool(prediction == example.label)


# -- Example ----------------------------------------------------------------------------------


def test_example_fields_are_attributes_and_a_read_only_mapping() -> None:
    example = Example(text="Where is my parcel?", intent="delivery")
    assert example.text == "Where is my parcel?"
    assert example.intent == "delivery"
    assert dict(example.fields) == {"text": "Where is my parcel?", "intent": "delivery"}
    with pytest.raises(TypeError):
        example.fields["intent"] = "refund"  # type: ignore[index]
    with pytest.raises(AttributeError, match="immutable"):
        example.intent = "refund"
    assert "intent" in dir(example)


def test_a_missing_field_is_an_attribute_error_naming_the_fields() -> None:
    example = Example(text="hi", intent="other")
    with pytest.raises(AttributeError, match=r"no field 'label'; its fields are text, intent"):
        example.label  # noqa: B018  (reading it is the test)
    assert not hasattr(example, "label")


def test_examples_are_equal_and_hash_alike_by_fields() -> None:
    a = Example(text="x", tags=["a", "b"], meta={"k": [1]})
    b = Example(meta={"k": [1]}, tags=["a", "b"], text="x")
    assert a == b and hash(a) == hash(b)
    assert a != Example(text="x", tags=["a"], meta={"k": [1]})
    assert a != {"text": "x"}
    assert len({Example(n=1), Example(n=1), Example(n=2)}) == 2


def test_with_fields_repr_and_pickle() -> None:
    example = Example(text="x", intent="refund")
    changed = example.with_fields(intent="delivery", note="moved")
    assert changed == Example(text="x", intent="delivery", note="moved")
    assert example.intent == "refund"
    assert repr(example) == "Example(text='x', intent='refund')"
    assert "..." in repr(Example(text="y" * 200))
    assert pickle.loads(pickle.dumps(changed)) == changed
    assert Example(self=1).with_fields(self=2).self == 2  # any keyword is a field name


def test_reserved_field_names_are_refused() -> None:
    with pytest.raises(TypeError, match="'fields' cannot be a field name"):
        Example(fields=1)


def test_inputs_and_labels_depend_on_the_target() -> None:
    example = Example(label="positive", review="Great!", text="Some text.")
    assert example.inputs_for(sentiment) == {"review": "Great!"}
    assert example.labels_for(sentiment) == {"label": "positive", "text": "Some text."}
    assert example.inputs_for(summarize) == {"text": "Some text."}
    assert example.inputs_for(analyse) == {"review": "Great!"}
    assert example.labels_for(analyse) == {"label": "positive", "text": "Some text."}
    assert Example(label="x").inputs_for(sentiment) == {}


# -- loading ----------------------------------------------------------------------------------


def test_load_jsonl_with_and_without_a_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [
        {"message": "Refund me", "intent": "refund", "id": 1},
        {"message": "Where is it?", "intent": "delivery", "id": 2},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert load_examples(path) == [Example(**line) for line in lines]
    mapped = load_examples(path, columns={"message": "review", "intent": "label"})
    assert mapped == [Example(review="Refund me", label="refund"), Example(review="Where is it?", label="delivery")]
    assert load_examples(str(path), limit=1) == [Example(**lines[0])]
    assert load_examples(path, limit=0) == []


def test_load_csv_with_and_without_a_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('message,intent,note\n"Refund me, please",refund,\nWhere is it?,delivery,late\n')
    assert load_examples(path) == [
        Example(message="Refund me, please", intent="refund", note=""),
        Example(message="Where is it?", intent="delivery", note="late"),
    ]
    assert load_examples(path, columns={"message": "text"}) == [
        Example(text="Refund me, please"),
        Example(text="Where is it?"),
    ]
    assert len(load_examples(path, limit=1)) == 1


@pytest.mark.parametrize(
    ("name", "content", "columns", "fragment"),
    [
        ("bad.jsonl", '{"a": 1}\n\n{"a": 2,\n{"a": 3}\n', None, r"bad\.jsonl, line 3: not valid JSON"),
        ("list.jsonl", '{"a": 1}\n[1, 2]\n', None, r"list\.jsonl, line 2: expected a JSON object, got list"),
        ("missing.jsonl", '{"a": 1}\n{"b": 2}\n', {"a": "x"}, r"missing\.jsonl, line 2: no column 'a'; it has b"),
        ("reserved.jsonl", '{"fields": 1}\n', None, r"reserved\.jsonl, line 1: .*'fields' cannot be a field name"),
        ("short.csv", "a,b\n1,2\n3\n", None, r"short\.csv, line 3: 1 value\(s\), but the header has 2"),
        ("header.csv", "a,b\n1,2\n", {"c": "x"}, r"header\.csv, line 1: no column 'c'"),
        ("data.txt", "a,b\n", None, r"data\.txt: cannot tell how to read \.txt"),
    ],
)
def test_a_bad_line_is_an_input_error_naming_the_file_and_line(
    tmp_path: Path, name: str, content: str, columns: dict[str, str] | None, fragment: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(lmdsl.InputError, match=fragment):
        load_examples(path, columns=columns)


# -- evaluate: fuzzy functions ----------------------------------------------------------------


def test_evaluate_a_fuzzy_function() -> None:
    model = scripted()
    with lmdsl.using(model=model):
        result = evaluate(sentiment, devset(), correct, progress=False)
    assert isinstance(result, EvaluationResult)
    assert result.score == 75.0
    assert [row.index for row in result.rows] == [0, 1, 2, 3]
    assert [row.prediction for row in result.rows] == ["positive", "negative", "positive", "negative"]
    assert [row.score for row in result.rows] == [1.0, 1.0, 1.0, 0.0]
    assert result.rows[0].inputs == {"review": "A great film."}
    assert result.rows[0].labels == {"label": "positive"}
    assert result.errors == 0 and all(row.error is None for row in result.rows)
    assert (result.lm_calls, result.input_tokens, result.output_tokens) == (4, 40, 8)
    assert [row.lm_calls for row in result.rows] == [1, 1, 1, 1]
    assert len(model.requests) == 4
    assert result.target == "sentiment"
    assert "score 75.0 on 4 example(s)" in result.summary()


def test_float_scores_are_kept_and_predictions_are_typed() -> None:
    examples = [Example(text="one two three", words=3), Example(text="one two", words=4)]

    def closeness(example: Example, prediction: Summary) -> float:
        assert isinstance(prediction, Summary)
        expected: int = example.words
        return 1.0 - abs(prediction.words - expected) / 4

    with lmdsl.using(model=scripted()):
        result = evaluate(summarize, examples, closeness, progress=False)
    assert result.score == pytest.approx(100 * (1.0 + 0.5) / 2)
    assert result.rows[1].prediction == Summary(topic="film", words=2)


def test_inputs_are_validated_against_the_signature() -> None:
    with lmdsl.using(model=scripted()):
        result = evaluate(summarize, [Example(text=3, words=1)], lambda ex, pred: True, progress=False)
    assert result.rows[0].error_type == "InputError"
    assert result.rows[0].score == 0.0
    assert result.rows[0].lm_calls == 0


def test_an_example_whose_output_never_validates_scores_zero_with_its_error() -> None:
    examples = [*devset()[:2], Example(review="pure garbage", label="negative")]
    with lmdsl.using(model=scripted()):
        result = evaluate(sentiment, examples, correct, progress=False)
    failed = result.rows[2]
    assert failed.prediction is None and failed.score == 0.0
    assert failed.error_type == "OutputError"
    assert failed.error is not None and "failed validation after 3 attempt(s)" in failed.error
    assert failed.lm_calls == 3  # the first try and two retries, all spent
    assert result.errors == 1
    assert result.score == pytest.approx(200 / 3)
    assert (result.lm_calls, result.input_tokens, result.output_tokens) == (5, 50, 10)
    assert "example 2: OutputError" in result.summary()


def test_a_failing_or_invalid_metric_is_an_error_for_that_row_only() -> None:
    def fussy(example: Example, prediction: str) -> Any:
        if "Dull" in example.review:
            raise KeyError("boom")
        if "Good" in example.review:
            return "yes"
        if "hated" in example.review:
            return 2
        return True

    with lmdsl.using(model=scripted()):
        result = evaluate(sentiment, devset(), fussy, progress=False)
    assert [row.score for row in result.rows] == [1.0, 0.0, 0.0, 0.0]
    assert [row.error_type for row in result.rows] == [None, "KeyError", "TypeError", "ValueError"]
    assert result.rows[1].error == "metric: 'boom'"
    assert result.rows[1].prediction == "negative"  # the run itself succeeded
    assert result.errors == 3 and result.score == 25.0


def test_more_than_max_errors_stops_and_carries_the_partial_result() -> None:
    examples = [
        Example(review="A great film.", label="positive"),
        Example(review="garbage one", label="negative"),
        Example(review="garbage two", label="negative"),
        Example(review="garbage three", label="negative"),
        Example(review="Good.", label="positive"),
    ]
    model = scripted()
    with (
        lmdsl.using(model=model),
        pytest.raises(EvaluationError, match=r"stopped after 2 errors \(max_errors=1\)") as caught,
    ):
        evaluate(sentiment, examples, correct, threads=1, max_errors=1, progress=False)
    partial = caught.value.result
    assert isinstance(caught.value, lmdsl.LMDSLError)
    assert [row.index for row in partial.rows] == [0, 1, 2]
    assert partial.errors == 2
    assert partial.score == pytest.approx(100 / 3)
    assert partial.lm_calls == 1 + 3 + 3
    assert len(model.requests) == 7  # the last two examples never ran


def test_max_errors_not_exceeded_returns_normally() -> None:
    examples = [Example(review="garbage", label="negative"), Example(review="Good.", label="positive")]
    with lmdsl.using(model=scripted()):
        result = evaluate(sentiment, examples, correct, max_errors=1, progress=False)
    assert result.errors == 1 and result.score == 50.0


def test_a_three_argument_metric_receives_the_trace() -> None:
    seen: list[tuple[TraceStep, ...]] = []

    def with_trace(example: Example, prediction: str, trace: tuple[TraceStep, ...]) -> bool:
        seen.append(trace)
        return True

    with lmdsl.using(model=scripted()):
        evaluate(sentiment, devset()[:1], with_trace, progress=False)
        evaluate(analyse, devset()[:1], with_trace, progress=False)
    (one,) = seen[0]
    assert one.function is sentiment and one.record.output == "positive"
    assert [step.function for step in seen[1]] == [sentiment, summarize]
    assert seen[1][1].record.output == Summary(topic="film", words=3)


def test_a_metric_with_an_optional_third_parameter_gets_the_trace_and_a_bad_metric_is_refused() -> None:
    got: list[object] = []

    def optional(example: Example, prediction: str, trace: object = None) -> bool:
        got.append(trace)
        return True

    with lmdsl.using(model=scripted()):
        evaluate(sentiment, devset()[:1], optional, progress=False)
        with pytest.raises(TypeError, match="takes 1 positional argument"):
            evaluate(sentiment, devset(), lambda example: True, progress=False)
    assert isinstance(got[0], tuple) and len(got[0]) == 1


# -- evaluate: programs -------------------------------------------------------------------------


def test_evaluate_a_program() -> None:
    examples = [
        Example(review="A great film.", expected="positive:film"),
        Example(review="Dull.", expected="positive:film"),
    ]
    with lmdsl.using(model=scripted()):
        result = evaluate(analyse, examples, lambda ex, pred: pred == ex.expected, progress=False)
    assert result.score == 50.0
    assert [row.prediction for row in result.rows] == ["positive:film", "negative:film"]
    assert result.rows[0].inputs == {"review": "A great film."}
    assert result.rows[0].labels == {"expected": "positive:film"}
    assert [row.lm_calls for row in result.rows] == [2, 2]
    assert (result.lm_calls, result.input_tokens, result.output_tokens) == (4, 40, 8)
    assert result.target == "analyse"


def test_a_failing_program_keeps_the_usage_of_the_calls_it_made() -> None:
    examples = [Example(review="garbage", expected="x")]
    with lmdsl.using(model=scripted()):
        result = evaluate(analyse, examples, lambda ex, pred: True, progress=False)
    assert result.rows[0].error_type == "OutputError"
    assert result.rows[0].lm_calls == 3


def test_replayed_calls_of_a_backtracking_program_are_counted_once() -> None:
    seen: list[tuple[TraceStep, ...]] = []

    def metric(example: Example, prediction: str, trace: tuple[TraceStep, ...]) -> bool:
        seen.append(trace)
        return bool(prediction == "positive:film")

    model = scripted()
    with lmdsl.using(model=model):
        result = evaluate(insisting, [Example(review="insist, it is great")], metric, progress=False)
    assert result.score == 100.0
    assert len(model.requests) == 3  # sentiment once, summarize twice (the retry after require)
    assert result.lm_calls == 3  # the replayed sentiment call is not counted again
    assert [step.function for step in seen[0]] == [sentiment, summarize]


# -- the cache and threads ---------------------------------------------------------------------


def test_cached_calls_are_not_counted(tmp_path: Path) -> None:
    model = scripted(cacheable=True)
    examples = [*devset(), Example(review="garbage", label="negative")]
    with lmdsl.using(model=model, cache=True, cache_dir=tmp_path):
        first = evaluate(sentiment, examples, correct, progress=False)
        second = evaluate(sentiment, examples, correct, progress=False)
    assert (first.lm_calls, first.input_tokens, first.output_tokens) == (7, 70, 14)
    assert (second.lm_calls, second.input_tokens, second.output_tokens) == (0, 0, 0)
    assert [row.lm_calls for row in second.rows] == [0] * 5
    assert second.score == first.score == 60.0
    assert len(model.requests) == 7


class SlowFirst:
    """A lock-free backend where earlier inputs answer later, so completion order is reversed."""

    name = "slow-first"
    cacheable = False
    live = False  # a test double: lmdsl's pytest plugin lets it run where live calls are refused

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished: list[str] = []

    def complete(self, request: Request) -> Completion:
        text = the_input(request)
        number = int(text.split()[-1])
        time.sleep((8 - number) * 0.01)
        with self.lock:
            self.finished.append(text)
        label = "positive" if number % 2 == 0 else "negative"
        return Completion(json.dumps({"sentiment": label}), USAGE)


def test_threads_keep_the_devset_order() -> None:
    model = SlowFirst()
    examples = [Example(review=f"review {i}", label="positive") for i in range(8)]
    with lmdsl.using(model=model):
        result = evaluate(sentiment, examples, correct, threads=4, progress=False)
    assert model.finished != sorted(model.finished)  # they really did finish out of order
    assert [row.index for row in result.rows] == list(range(8))
    assert [row.inputs["review"] for row in result.rows] == [f"review {i}" for i in range(8)]
    assert [row.prediction for row in result.rows] == ["positive", "negative"] * 4
    assert result.score == 50.0


def test_workers_see_the_callers_configuration() -> None:
    with lmdsl.using(model=scripted()):
        result = evaluate(sentiment, devset() * 3, correct, threads=4, progress=False)
    assert result.errors == 0 and len(result.rows) == 12


# -- export -----------------------------------------------------------------------------------


def evaluated() -> EvaluationResult:
    examples = [Example(text="one two", words=2, topic="film"), Example(text="garbage", words=1, topic="x")]
    with lmdsl.using(model=scripted()):
        return evaluate(summarize, examples, lambda ex, pred: pred.words == ex.words, progress=False)


def test_export_to_json_and_read_it_back(tmp_path: Path) -> None:
    result = evaluated()
    path = tmp_path / "result.json"
    result.to_json(path)
    data = json.loads(path.read_text())
    assert data["score"] == 50.0 and data["errors"] == 1 and data["lm_calls"] == 4 and data["examples"] == 2
    assert data["rows"][0]["prediction"] == {"topic": "film", "words": 2}
    assert data["rows"][0]["inputs"] == {"text": "one two"}
    assert data["rows"][0]["labels"] == {"words": 2, "topic": "film"}
    assert data["rows"][1]["prediction"] is None
    assert data["rows"][1]["error_type"] == "OutputError"


def test_export_to_csv_and_read_it_back(tmp_path: Path) -> None:
    result = evaluated()
    path = tmp_path / "result.csv"
    result.to_csv(path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    first, second = rows
    assert first["index"] == "0"
    assert first["inputs.text"] == "one two"
    assert first["labels.words"] == "2" and first["labels.topic"] == "film"
    assert json.loads(first["prediction"]) == {"topic": "film", "words": 2}
    assert float(first["score"]) == 1.0 and first["error"] == ""
    assert first["lm_calls"] == "1"
    assert second["prediction"] == "" and second["error_type"] == "OutputError"
    assert "failed validation" in second["error"]


# -- progress -----------------------------------------------------------------------------------


def test_progress_false_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with lmdsl.using(model=scripted()):
        evaluate(sentiment, devset(), correct, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_off_a_terminal_prints_a_line_every_tenth(capsys: pytest.CaptureFixture[str]) -> None:
    examples = [Example(review="great" if i % 2 else "bad", label="positive") for i in range(20)]
    with lmdsl.using(model=scripted()):
        evaluate(sentiment, examples, correct, threads=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10
    assert lines[0] == "evaluate: 2/20, score 50.0"
    assert lines[-1] == "evaluate: 20/20, score 50.0"


def test_progress_lines_mention_errors(capsys: pytest.CaptureFixture[str]) -> None:
    examples = [Example(review="garbage", label="negative"), Example(review="great", label="positive")]
    with lmdsl.using(model=scripted()):
        evaluate(sentiment, examples, correct, threads=1)
    assert capsys.readouterr().err.splitlines() == [
        "evaluate: 1/2, score 0.0, 1 error(s)",
        "evaluate: 2/2, score 50.0, 1 error(s)",
    ]


def test_progress_true_forces_the_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with lmdsl.using(model=scripted()):
        evaluate(sentiment, devset(), correct, progress=True)
    err = capsys.readouterr().err
    assert "evaluate sentiment" in err and "4/4" in err


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="devset is empty"):
        evaluate(sentiment, [], correct, progress=False)
    with pytest.raises(ValueError, match="max_errors"):
        evaluate(sentiment, devset(), correct, max_errors=-1, progress=False)
    with pytest.raises(ValueError, match="threads"):
        evaluate(sentiment, devset(), correct, threads=0, progress=False)
    with pytest.raises(TypeError, match="fuzzy function or a program"):
        evaluate(len, devset(), correct, progress=False)  # type: ignore[arg-type]


def test_mappings_are_accepted_as_examples() -> None:
    with lmdsl.using(model=scripted()):
        result = evaluate(sentiment, [{"review": "great", "label": "positive"}], correct, progress=False)
    assert result.score == 100.0
