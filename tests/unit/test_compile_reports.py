"""What a compile tells the user (issue 16): the first error of a program that fails, a one-line
usage error for one that cannot run at all, a warning when labels fit no function, live progress
inside each candidate's evaluation, and calls answered by the cache counted apart, without a
warm re-run wiping out the cost an artifact recorded."""

from __future__ import annotations

import json
import logging
import re
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.cli import main
from lmdsl.compiler import BootstrapFewShot, LabeledFewShot, RandomSearch
from lmdsl.compiler.base import UnusedLabelsWarning
from lmdsl.lm.types import Request

APP = textwrap.dedent(
    '''
    import lmdsl
    from lmdsl.compiler import RandomSearch

    def respond(request):
        text = request.messages[request.prefix_length].content.split(": ", 1)[1]
        return {"sentiment": "negative" if "bad" in text else "positive"}

    MODEL = lmdsl.ScriptedModel(respond, name="compile-reports", cacheable=True)

    @lmdsl.fuzzy(model=MODEL)
    def sentiment(text: str) -> str:
        """Classify the sentiment."""

    def exact(example, prediction):
        return prediction == example.label

    TRAIN = [lmdsl.Example(text=t, label=l) for t, l in [("good", "positive"), ("bad", "negative"), ("nice", "positive"), ("so bad", "negative")]]

    @lmdsl.optimize(trainset=TRAIN, metric=exact, optimizer=RandomSearch(candidates=3, threads=1), artifact="classify.json")
    @lmdsl.program
    def classify(text: str) -> str:
        BODY
    '''
)


def write_app(folder: Path, body: str) -> Path:
    path = folder / "app.py"
    path.write_text(APP.replace("BODY", body))
    return path


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def table_row(out: str, label: str) -> list[str]:
    for line in out.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line) if cell.strip()]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no {label!r} row in:\n{out}")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path) -> Any:
    with lmdsl.using(cache=True, cache_dir=tmp_path / "cache"):
        yield


# -- a program that fails ------------------------------------------------------------------------------------


def test_compiling_a_program_that_cannot_run_ends_in_one_line_naming_the_error_and_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(tmp_path, "return sentiment(txt=text)  # misspelled")
    assert main(["compile", f"{app}:classify"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("lmdsl: error: classify cannot run: every one of its 4 dev example(s) failed; the first: ")
    assert "example 0: InputError: " in last and "unexpected keyword argument 'txt'" in last
    assert last.endswith(f"(at {app}:{line_of(app, '# misspelled')})")
    assert not (tmp_path / "classify.json").exists()


def test_a_compile_where_some_examples_fail_names_the_first_error_and_still_compiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = write_app(tmp_path, 'return {"nothing": "x"}[text] if "so" in text else sentiment(text)  # sometimes')
    assert main(["compile", f"{app}:classify"]) == 0
    out, err = capsys.readouterr()
    at = f"(at {app}:{line_of(app, '# sometimes')})"
    assert f"compile: uncompiled, 1 of 4 example(s) failed; the first: example 3: KeyError: 'so bad' {at}" in err
    candidates = [r.getMessage() for r in caplog.records if r.name == "lmdsl.compiler"]
    assert candidates[0] == (
        f"candidate 1/3 (zero-shot): 75.0, 0 LM calls so far (and 3 from the cache), "  # the baseline filled the cache
        f"1 error(s), the first: example 3: KeyError: 'so bad' {at}"
    )
    assert table_row(out, "compiled")[1] == "75.0" and (tmp_path / "classify.json").exists()


def test_bootstrapping_passes_over_runs_that_raise_instead_of_stopping() -> None:
    @lmdsl.fuzzy
    def mood(text: str) -> str:
        """Say pos or neg."""

    @lmdsl.program
    def judge(text: str) -> str:
        if text == "broken":
            raise ValueError("the program's own bug")
        return mood(text)

    train = [lmdsl.Example(text=t, label="pos") for t in ("broken", "good", "nice")]
    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"mood": "pos"})):
        compiled = BootstrapFewShot(max_demos=2, max_labeled=0).compile(judge, train, lambda e, p: p == e.label)
    assert [demo.inputs["text"] for demo in compiled.params["mood"].demos] == ["good", "nice"]


# -- labels that fit no function ------------------------------------------------------------------------------


class Summary(BaseModel):
    topic: str


@lmdsl.fuzzy
def summarize(text: str) -> Summary:
    """Summarise the topic."""


@lmdsl.fuzzy
def route(summary: str) -> str:
    """Route to a team."""


@lmdsl.program
def triage(text: str) -> str:
    return route(summarize(text).topic)


def router(request: Request) -> dict[str, Any]:
    if "topic" in request.messages[0].content:
        return {"topic": "billing"}
    return {"route": "billing"}


TRIAGE_TRAIN = [lmdsl.Example(text=t, team="billing") for t in ("refund please", "card declined", "invoice")]


def test_the_labelled_candidate_warns_once_when_no_label_names_a_functions_output() -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(router)), pytest.warns(UnusedLabelsWarning) as said:
        RandomSearch(candidates=2, threads=1).compile(triage, TRIAGE_TRAIN, lambda e, p: p == e.team)  # compile
    assert len(said) == 1
    assert str(said[0].message) == (
        "triage: the labelled candidate has no demos (it is the zero-shot program): in a program of several "
        "fuzzy functions a label counts for the function whose output it names, and the label field(s) team "
        "name none; the fuzzy functions take and return: route(summary) -> route, summarize(text) -> topic. "
        "Name a label field after the output of the function it labels"
    )
    assert (said[0].filename, said[0].lineno) == (__file__, line_of(Path(__file__), "# compile"))


def test_no_warning_when_the_optimizer_was_asked_for_no_labelled_demos() -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(router)), warnings.catch_warnings():
        warnings.simplefilter("error", UnusedLabelsWarning)
        compiled = RandomSearch(candidates=3, max_labeled=0, threads=1).compile(
            triage, TRIAGE_TRAIN, lambda e, p: p == e.team
        )
        LabeledFewShot(k=0).compile(triage, TRIAGE_TRAIN, lambda e, p: True)
    assert [c.label for c in compiled.candidates][:2] == ["zero-shot", "labelled (the same as zero-shot)"]


def test_labeled_few_shot_warns_too_and_a_label_named_after_an_output_is_used_without_a_warning() -> None:
    with pytest.warns(UnusedLabelsWarning, match=r"LabeledFewShot has no demos .* label field\(s\) team name none"):
        LabeledFewShot(k=2).compile(triage, TRIAGE_TRAIN, lambda e, p: True)
    named = [example.with_fields(topic="billing") for example in TRIAGE_TRAIN]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedLabelsWarning)
        compiled = LabeledFewShot(k=2).compile(triage, named, lambda e, p: True)
    assert len(compiled.params["summarize"].demos) == 2


def test_labels_that_name_an_output_whose_function_has_no_inputs_in_the_examples_say_so() -> None:
    named = [example.with_fields(route="billing") for example in TRIAGE_TRAIN]  # route takes `summary`: absent
    with pytest.warns(UnusedLabelsWarning, match=r"team, route fit the output of route, but no example has all"):
        LabeledFewShot(k=2).compile(triage, named, lambda e, p: True)


# -- progress, and the cache's part --------------------------------------------------------------------------


def test_each_candidates_evaluation_shows_its_progress_on_the_compile_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = write_app(tmp_path, "return sentiment(text)")
    assert main(["compile", f"{app}:classify", "--dry-run"]) == 0
    progress = [r.getMessage() for r in caplog.records if r.name == "lmdsl.compiler.progress"]
    assert progress[:4] == [
        "evaluate candidate 1/3 (zero-shot): 1/4, score 100.0",
        "evaluate candidate 1/3 (zero-shot): 2/4, score 100.0",
        "evaluate candidate 1/3 (zero-shot): 3/4, score 100.0",
        "evaluate candidate 1/3 (zero-shot): 4/4, score 100.0",
    ]
    assert any(line.startswith("evaluate candidate 3/3 (bootstrapped): ") for line in progress)


def test_a_compile_off_the_command_line_shows_no_progress_unless_its_log_is_shown(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lmdsl.compiler")
    with lmdsl.using(model=lmdsl.ScriptedModel(router)), warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedLabelsWarning)
        RandomSearch(candidates=2, threads=1).compile(triage, TRIAGE_TRAIN, lambda e, p: p == e.team)
    assert [r for r in caplog.records if r.name.startswith("lmdsl.compiler")] == []
    assert capsys.readouterr().err == ""


def test_a_warm_rerun_counts_its_cached_calls_and_keeps_the_cost_the_artifact_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(tmp_path, "return sentiment(text)")
    assert main(["compile", f"{app}:classify"]) == 0
    cold = capsys.readouterr().out
    first = json.loads((tmp_path / "classify.json").read_text())["cost"]
    assert first["lm_calls"] > 0 and first["tokens"] > 0

    assert main(["compile", f"{app}:classify"]) == 0
    warm = capsys.readouterr().out
    _, calls, cached, tokens, _ = table_row(warm, "compiling")  # (its score cell is empty)
    assert (calls, tokens) == ("0", "0") and int(cached) == first["lm_calls"] + first["cached_calls"]
    assert table_row(warm, "uncompiled")[2:4] == ["0", "4"]  # LM calls, cached calls
    assert table_row(cold, "uncompiled")[2:4] == ["4", "0"]
    second = json.loads((tmp_path / "classify.json").read_text())["cost"]
    assert second == {**first, "cached_calls": int(cached)}


def test_an_evaluation_counts_the_calls_the_cache_answered() -> None:
    model = lmdsl.ScriptedModel(lambda request: {"mood": "pos"}, name="compile-reports-eval", cacheable=True)

    @lmdsl.fuzzy(model=model)
    def mood(text: str) -> str:
        """Say pos or neg."""

    examples = [lmdsl.Example(text=t) for t in ("a", "b", "a")]
    first = lmdsl.evaluate(mood, examples, lambda e, p: True, threads=1, progress=False)
    again = lmdsl.evaluate(mood, examples, lambda e, p: True, threads=1, progress=False)
    assert (first.lm_calls, first.cached_calls) == (2, 1)
    assert (again.lm_calls, again.cached_calls) == (0, 3)
    assert [row.cached_calls for row in again.rows] == [1, 1, 1]
    assert "0 LM call(s) (and 3 from the cache)" in again.summary()
