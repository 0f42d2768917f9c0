"""Candidate parameters apply in a context-local overlay, never by writing to the user's program."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import pytest

import lmdsl
from lmdsl.compiler import RandomSearch
from lmdsl.lm.types import Request
from lmdsl.params import Demo, Params, overlaid
from tests.unit.test_optimize import DEV, TRAIN, classify, clean, demo_count, exact, respond, sentiment

# test_optimize's program labels only the final answer: the labelled candidate's warning is expected
pytestmark = pytest.mark.filterwarnings("ignore::lmdsl.UnusedLabelsWarning")

ONE = Params("Say which.", (Demo({"text": "good"}, "positive"),))
TWO = Params("Only say which.", (Demo({"text": "bad"}, "negative"), Demo({"text": "nice"}, "positive")))


@pytest.fixture(autouse=True)
def _fresh() -> Any:
    yield
    for fn in (clean, sentiment):
        fn.reset_params()


def test_an_overlay_is_seen_in_its_context_only_and_nests() -> None:
    own = sentiment.params
    seen_elsewhere: list[Params] = []
    with overlaid({sentiment: ONE}):
        assert sentiment.params is ONE
        other = threading.Thread(target=lambda: seen_elsewhere.append(sentiment.params))  # a fresh context
        other.start()
        other.join()
        with overlaid({sentiment: TWO, clean: ONE}):
            assert (sentiment.params, clean.params) == (TWO, ONE)
            assert contextvars.copy_context().run(lambda: sentiment.params) is TWO  # copied contexts keep it
        assert (sentiment.params, clean.params) == (ONE, clean.params)
        assert clean.params.demos == ()
    assert sentiment.params is own
    assert seen_elsewhere == [own]


def test_the_prompt_follows_the_overlay() -> None:
    prompts: list[int] = []

    def model(request: Request) -> dict[str, Any]:
        prompts.append(demo_count(request))
        return respond(request)

    with lmdsl.using(model=lmdsl.ScriptedModel(model)):
        sentiment("fine")
        with classify.with_params({"sentiment": TWO}):
            sentiment("fine")
            assert sentiment.prompt_prefix[0].content.startswith("Only say which.")
        sentiment("fine")
    assert prompts == [0, 2, 0]


def test_with_params_checks_names_and_demos_before_anything_applies() -> None:
    with pytest.raises(KeyError, match="no fuzzy function 'missing'"):
        with classify.with_params({"missing": ONE}):
            pass
    with pytest.raises(lmdsl.InputError):
        with classify.with_params({"sentiment": Params("x", (Demo({"text": "a"}, "not a label"),))}):
            pass
    assert sentiment.params.demos == ()


def test_two_compiles_score_candidates_at_once_while_a_third_thread_keeps_the_programs_own_params() -> None:
    """Both compiles are stopped mid-scoring (inside their candidate's overlay) until a third
    thread has called the program; each must still find what a compile alone finds."""
    which: contextvars.ContextVar[str] = contextvars.ContextVar("which", default="")
    meet = threading.Barrier(3, timeout=60)
    called = threading.Event()
    paused: set[str] = set()
    third_saw: list[int] = []
    lock = threading.Lock()

    def model(request: Request) -> dict[str, Any]:
        tag = which.get()
        if tag == "third":
            third_saw.append(demo_count(request))
        elif tag and demo_count(request):
            with lock:
                first = tag not in paused
                paused.add(tag)
            if first:
                meet.wait()
                assert called.wait(timeout=60)
        return respond(request)

    optimizer = RandomSearch(candidates=4, seed=0, threads=2)
    with lmdsl.using(model=lmdsl.ScriptedModel(model), cache=False):
        alone = optimizer.compile(classify, TRAIN, exact, devset=DEV)
        paused.update({"alone"})
        results: dict[str, Any] = {}

        def compile_as(tag: str) -> None:
            which.set(tag)
            results[tag] = optimizer.compile(classify, TRAIN, exact, devset=DEV)

        def third() -> None:
            which.set("third")
            meet.wait()
            results["third"] = classify("Great film!")
            called.set()

        runs = [(compile_as, "a"), (compile_as, "b"), (third,)]  # each in a copy of this context (the model)
        threads = [threading.Thread(target=contextvars.copy_context().run, args=run) for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert paused >= {"a", "b"}
    assert third_saw == [0, 0]  # clean and sentiment, both with the program's own (no) demos
    assert results["third"] == "positive"  # what the zero-shot program answers
    for tag in ("a", "b"):
        compiled = results[tag]
        assert compiled.params == alone.params
        assert [(c.label, c.score) for c in compiled.candidates] == [(c.label, c.score) for c in alone.candidates]
    assert alone.score is not None and alone.baseline is not None and alone.score > alone.baseline
    assert classify.params == {
        "clean": Params(clean.signature.instructions),
        "sentiment": Params(sentiment.signature.instructions),
    }
