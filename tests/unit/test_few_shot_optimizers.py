"""LabeledFewShot, BootstrapFewShot and RandomSearch: the `Compiled` record each returns, field by
field, on a scripted model whose answers depend on the demos, the rollout and the temperature.

Labels are upper case ("POS"), the model answers in lower case ("pos") and the metric ignores
case, so a demo's output tells a labelled demo from a bootstrapped (traced) one."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import lmdsl
from lmdsl.compiler import BootstrapFewShot, LabeledFewShot, RandomSearch
from lmdsl.compiler.base import Budget, Candidate, Compiled
from lmdsl.compiler.few_shot import candidate_ladder, metric_passes
from lmdsl.lm.types import Request


@lmdsl.fuzzy
def mood(text: str) -> str:
    """Say pos or neg."""


@lmdsl.program
def judge(text: str) -> str:
    return mood(text)


LABELS = {"good": "POS", "bad": "NEG", "nice": "POS", "awful": "NEG", "fine": "POS", "grim": "NEG"}
TRAIN = [lmdsl.Example(text=text, label=label) for text, label in LABELS.items()]
DEV = [
    lmdsl.Example(text=t, label=label)
    for t, label in [("lovely", "POS"), ("great", "POS"), ("sunny", "POS"), ("dull", "NEG")]
]
ANSWERS = {
    **{text: label.lower() for text, label in LABELS.items()},
    "lovely": "pos",
    "great": "pos",
    "sunny": "pos",
    "dull": "neg",
}
DOCSTRING = "Say pos or neg."


def asked(request: Request) -> str:
    return request.messages[request.prefix_length].content.split(": ", 1)[1]


def demo_count(request: Request) -> int:
    return sum(1 for m in request.messages[: request.prefix_length] if m.role == "assistant")


def demo_inputs(request: Request) -> list[str]:
    return [m.content.split(": ", 1)[1] for m in request.messages[1 : request.prefix_length] if m.role == "user"]


def exact(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction.upper() == example.label)


def learner(otherwise: str) -> Callable[[Request], dict[str, Any]]:
    """Right once it has seen two demos; before that it says `otherwise`."""

    def reply(request: Request) -> dict[str, Any]:
        return {"mood": ANSWERS[asked(request)] if demo_count(request) >= 2 else otherwise}

    return reply


def always_right(request: Request) -> dict[str, Any]:
    return {"mood": ANSWERS[asked(request)]}


def shown(params: Any) -> list[tuple[str, str]]:
    return [(demo.inputs["text"], demo.output) for demo in params["mood"].demos]


def demos(*pairs: tuple[str, str]) -> dict[str, lmdsl.Params]:
    return {"mood": lmdsl.Params(DOCSTRING, tuple(lmdsl.Demo({"text": text}, output) for text, output in pairs))}


def timed(run: Callable[[], Compiled]) -> tuple[Compiled, float]:
    """The result, and the time around the call: the seconds a record reports fit inside it."""
    before = time.perf_counter()
    compiled = run()
    return compiled, time.perf_counter() - before


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    mood.reset_params()


# -- metric_passes ----------------------------------------------------------------------------


def test_a_metric_that_takes_the_trace_gets_the_example_the_prediction_and_the_trace() -> None:
    example = lmdsl.Example(text="good", label="POS")
    trace = ("a step",)
    calls: list[tuple[Any, ...]] = []

    def with_trace(example: lmdsl.Example, prediction: str, trace: Any) -> float:
        calls.append((example, prediction, trace))
        return 1.0

    assert metric_passes(with_trace, example, "pos", trace, None) is True
    assert len(calls) == 1 and calls[0][0] is example and calls[0][1] == "pos" and calls[0][2] is trace


# -- LabeledFewShot ---------------------------------------------------------------------------


def test_labelled_few_shot_returns_a_seeded_sample_and_its_record() -> None:
    compiled, elapsed = timed(lambda: LabeledFewShot(k=3, seed=5).compile(judge, TRAIN, exact))
    chosen = demos(("bad", "NEG"), ("good", "POS"), ("awful", "NEG"))
    assert compiled.params == chosen
    assert (compiled.score, compiled.baseline) == (None, None)
    assert compiled.candidates == (Candidate("labelled", chosen, None),)
    assert (compiled.lm_calls, compiled.tokens) == (0, 0)
    assert isinstance(compiled.seconds, float) and 0.0 <= compiled.seconds <= elapsed
    assert compiled.settings == {"optimizer": "LabeledFewShot", "k": 3, "seed": 5}


def test_labelled_few_shot_without_a_seed_keeps_the_training_order() -> None:
    compiled = LabeledFewShot(k=2, seed=None).compile(judge, TRAIN, exact)
    assert compiled.params == demos(("good", "POS"), ("bad", "NEG"))


# -- BootstrapFewShot -------------------------------------------------------------------------


def test_bootstrap_returns_the_traced_demos_and_its_record() -> None:
    """The teacher sees the first two labelled examples but never an example's own: "good" and
    "bad" see one demo and fail, "nice" and "awful" see two and pass, and then it stops."""
    model = lmdsl.ScriptedModel(learner("unsure"))
    with lmdsl.using(model=model):
        compiled, elapsed = timed(lambda: BootstrapFewShot(max_demos=2, max_labeled=2).compile(judge, TRAIN, exact))
    chosen = demos(("nice", "pos"), ("awful", "neg"))
    assert compiled.params == chosen  # two traced demos fill max_labeled: no labelled one is added
    assert (compiled.score, compiled.baseline) == (None, None)
    assert compiled.candidates == (Candidate("bootstrapped", chosen, None),)
    assert [asked(r) for r in model.requests] == ["good", "bad", "nice", "awful"]
    assert compiled.lm_calls == 4
    assert compiled.tokens == 14  # '{"mood": "unsure"}' twice (4 tokens each), then two 3-token answers
    assert isinstance(compiled.seconds, float) and 0.0 <= compiled.seconds <= elapsed
    assert compiled.settings == {
        "optimizer": "BootstrapFewShot",
        "max_demos": 2,
        "max_labeled": 2,
        "rounds": 1,
        "threshold": None,
        "max_lm_calls": None,
        "max_total_tokens": None,
        "seed": 0,
    }


def test_bootstrap_tops_up_with_a_seeded_sample_of_the_unused_labelled_examples() -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"mood": "unsure"})):
        compiled = BootstrapFewShot(max_demos=2, max_labeled=3).compile(judge, TRAIN, exact)
    assert compiled.params == demos(("fine", "POS"), ("nice", "POS"), ("bad", "NEG"))
    assert compiled.lm_calls == 6  # every example was tried; none passed


def test_the_teacher_never_shows_an_example_its_own_labelled_demo() -> None:
    def copies_a_demo(request: Request) -> dict[str, Any]:
        """Answers right only when a demo gives the answer away."""
        return {"mood": ANSWERS[asked(request)] if asked(request) in demo_inputs(request) else "unsure"}

    model = lmdsl.ScriptedModel(copies_a_demo)
    with lmdsl.using(model=model):
        compiled = BootstrapFewShot(max_demos=2, max_labeled=6).compile(judge, TRAIN, exact)
    assert len(model.requests) == 6
    assert all(demo_count(r) == 5 and asked(r) not in demo_inputs(r) for r in model.requests)
    assert all(output.isupper() for _, output in shown(compiled.params))  # nothing was bootstrapped
    assert compiled.lm_calls == 6


def test_bootstrap_takes_max_demos_from_its_argument() -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(always_right)):
        params = BootstrapFewShot(max_demos=4, max_labeled=0).bootstrap(
            judge, TRAIN, exact, budget=Budget(), max_demos=1
        )
    assert params == demos(("good", "pos"))


def test_later_rounds_resample_at_temperature_one_with_a_new_rollout() -> None:
    """Round 0 gets no valid reply (an error after its repairs), round 1 a wrong answer,
    round 2 the right one: every round is tried before the next example."""
    model_requests: list[tuple[str, float, int]] = []

    def by_rollout(request: Request) -> Any:
        model_requests.append((asked(request), request.temperature, request.rollout))
        if request.rollout == 0:
            return "not json"
        return {"mood": ANSWERS[asked(request)] if request.rollout == 2 else "unsure"}

    with lmdsl.using(model=lmdsl.ScriptedModel(by_rollout)):
        compiled = BootstrapFewShot(max_demos=1, max_labeled=0, rounds=3).compile(judge, TRAIN, exact)
    assert compiled.params == demos(("good", "pos"))
    assert model_requests == [("good", 0.0, 0)] * 3 + [("good", 1.0, 1), ("good", 1.0, 2)]
    assert compiled.settings["rounds"] == 3


def test_bootstrap_gives_a_metric_that_takes_the_trace_the_runs_trace() -> None:
    traces: list[list[tuple[str, str]]] = []

    def traced(example: lmdsl.Example, prediction: str, trace: Any) -> bool:
        traces.append([(step.record.inputs["text"], step.record.output) for step in trace])
        return bool(prediction.upper() == example.label)

    with lmdsl.using(model=lmdsl.ScriptedModel(always_right)):
        compiled = BootstrapFewShot(max_demos=2, max_labeled=0).compile(judge, TRAIN, traced)
    assert traces == [[("good", "pos")], [("bad", "neg")]]
    assert compiled.params == demos(("good", "pos"), ("bad", "neg"))


@pytest.mark.parametrize("budget", [{"max_lm_calls": 2}, {"max_total_tokens": 6}])
def test_bootstrap_stops_when_its_budget_is_spent(budget: dict[str, int]) -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(always_right)):
        compiled = BootstrapFewShot(max_demos=4, max_labeled=0, **budget).compile(judge, TRAIN, exact)
    assert compiled.params == demos(("good", "pos"), ("bad", "neg"))  # two runs of 1 call and 3 tokens each
    assert (compiled.lm_calls, compiled.tokens) == (2, 6)


# -- the candidate ladder ---------------------------------------------------------------------


def test_the_ladder_draws_each_shuffled_rungs_size_then_its_shuffle_from_the_rng() -> None:
    """Random(5) gives sizes 3, 1, 2 (randint first), each followed by the seed of its shuffle
    (random()); every run passes, so a rung holds the first `size` examples of its shuffle."""
    model = lmdsl.ScriptedModel(always_right)
    bootstrapper = BootstrapFewShot(max_demos=4, max_labeled=0, seed=0)
    with lmdsl.using(model=model):
        ladder = list(candidate_ladder(judge, TRAIN, exact, bootstrapper, Budget(), random.Random(5), 6))
    assert ladder == [
        ("zero-shot", demos()),
        ("labelled", demos()),  # max_labeled=0
        ("bootstrapped", demos(("good", "pos"), ("bad", "neg"), ("nice", "pos"), ("awful", "neg"))),
        ("bootstrapped, shuffled #1, 3 demos", demos(("good", "pos"), ("awful", "neg"), ("grim", "neg"))),
        ("bootstrapped, shuffled #2, 1 demos", demos(("awful", "neg"))),
        ("bootstrapped, shuffled #3, 2 demos", demos(("fine", "pos"), ("awful", "neg"))),
    ]
    # the rungs share their runs: each example is run once (4 in order, then "grim" and "fine")
    assert [asked(request) for request in model.requests] == ["good", "bad", "nice", "awful", "grim", "fine"]


def test_the_ladder_is_built_one_rung_at_a_time_and_checks_the_budget_between_rungs() -> None:
    model = lmdsl.ScriptedModel(always_right)
    budget = Budget(max_lm_calls=3)
    bootstrapper = BootstrapFewShot(max_demos=2, max_labeled=2, seed=0)
    zero_shot = demos(("given", "POS"))
    with lmdsl.using(model=model), budget.counting():
        ladder = candidate_ladder(judge, TRAIN, exact, bootstrapper, budget, random.Random(0), 8, zero_shot=zero_shot)
        assert next(ladder) == ("zero-shot", zero_shot)
        assert next(ladder) == ("labelled", demos(("fine", "POS"), ("nice", "POS")))  # Random(0)'s draw
        assert model.requests == []  # nothing is bootstrapped before it is asked for
        assert next(ladder) == ("bootstrapped", demos(("good", "pos"), ("bad", "neg")))
        assert len(model.requests) == 2
        budget.lm_calls = 3  # spent elsewhere (scoring the rung, say) before the next rung is asked for
        assert list(ladder) == []
    assert len(model.requests) == 2


def test_a_spent_budget_still_gives_zero_shot_and_a_rung_cut_short() -> None:
    model = lmdsl.ScriptedModel(always_right)
    budget = Budget(max_lm_calls=1)
    bootstrapper = BootstrapFewShot(max_demos=3, max_labeled=0, seed=0)
    with lmdsl.using(model=model), budget.counting():
        labels = [
            label for label, _ in candidate_ladder(judge, TRAIN, exact, bootstrapper, budget, random.Random(0), 8)
        ]
    assert labels == ["zero-shot", "labelled", "bootstrapped"]  # the bootstrap stopped after its first call
    assert len(model.requests) == 1


# -- RandomSearch -----------------------------------------------------------------------------


def test_random_search_returns_every_candidate_and_picks_the_first_best(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    threads: set[str] = set()

    def reply(request: Request) -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        return learner("pos")(request)

    caplog.set_level(logging.INFO, logger="lmdsl.compiler")
    optimizer = RandomSearch(candidates=5, max_demos=2, max_labeled=2, seed=2, threads=1)
    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        compiled, elapsed = timed(lambda: optimizer.compile(judge, TRAIN, exact, devset=DEV))

    labelled = demos(("nice", "POS"), ("awful", "NEG"))
    assert compiled.candidates == (
        Candidate("zero-shot", demos(), 75.0),
        Candidate("labelled", labelled, 100.0),
        Candidate("bootstrapped", demos(("good", "pos"), ("nice", "pos")), 100.0),
        Candidate("bootstrapped, shuffled #1, 1 demos", demos(("nice", "pos"), ("awful", "NEG")), 100.0),
        Candidate("bootstrapped, shuffled #2, 2 demos", demos(("fine", "pos"), ("good", "pos")), 100.0),
    )
    assert compiled.params == labelled  # the first of the equally good candidates
    assert (compiled.score, compiled.baseline) == (100.0, 75.0)  # the baseline is zero-shot on the dev set
    assert (compiled.lm_calls, compiled.tokens) == (24, 72)  # the shuffled rungs reuse 2 runs of the bootstrap's
    assert isinstance(compiled.seconds, float) and 0.0 <= compiled.seconds <= elapsed
    assert compiled.settings == {
        "optimizer": "RandomSearch",
        "candidates": 5,
        "max_demos": 2,
        "max_labeled": 2,
        "rounds": 1,
        "threshold": None,
        "max_lm_calls": None,
        "max_total_tokens": None,
        "threads": 1,
        "seed": 2,
        "minibatch": 16,
    }
    assert [r.getMessage() for r in caplog.records if r.name == "lmdsl.compiler"] == [
        "candidate 1/5 (zero-shot): 75.0, 4 LM calls so far",
        "candidate 2/5 (labelled): 100.0, 8 LM calls so far",
        "candidate 3/5 (bootstrapped): 100.0, 15 LM calls so far",
        "candidate 4/5 (bootstrapped, shuffled #1, 1 demos): 100.0, 19 LM calls so far",
        "candidate 5/5 (bootstrapped, shuffled #2, 2 demos): 100.0, 24 LM calls so far",
    ]
    assert threads == {threading.main_thread().name}  # threads=1: every evaluation ran in this thread
    out, err = capsys.readouterr()
    # no progress display: neither the bar ("evaluate judge ...") nor the plain lines ("evaluate: 4/4, ...")
    assert out == "" and "evaluate judge" not in err and "evaluate: " not in err


def test_random_search_passes_its_settings_to_the_bootstrapper() -> None:
    """The bootstrapped candidate: a run passes only on its second round (resampled), one traced
    demo is wanted, and two labelled demos, drawn with the seed, top it up to max_labeled."""

    def second_round(request: Request) -> dict[str, Any]:
        return {"mood": ANSWERS[asked(request)] if request.rollout == 1 else "unsure"}

    with lmdsl.using(model=lmdsl.ScriptedModel(second_round)):
        compiled = RandomSearch(candidates=3, max_demos=1, max_labeled=3, rounds=2, seed=4, threads=1).compile(
            judge, TRAIN, exact, devset=DEV
        )
    assert [c.label for c in compiled.candidates] == ["zero-shot", "labelled", "bootstrapped"]
    assert shown(compiled.candidates[1].params) == [("awful", "NEG"), ("grim", "NEG"), ("fine", "POS")]
    assert shown(compiled.candidates[2].params) == [("good", "pos"), ("fine", "POS"), ("grim", "NEG")]


def test_random_search_bootstraps_with_its_threshold() -> None:
    def half_credit(example: lmdsl.Example, prediction: str) -> float:
        return 1.0 if prediction.upper() == example.label else 0.5

    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"mood": "unsure"})):
        compiled = RandomSearch(candidates=3, max_demos=2, max_labeled=0, threshold=0.5, threads=1).compile(
            judge, TRAIN, half_credit, devset=DEV
        )
    assert compiled.candidates[2] == Candidate("bootstrapped", demos(("good", "unsure"), ("bad", "unsure")), 50.0)


def test_random_search_scores_on_the_training_set_without_a_devset() -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(learner("pos"))):
        compiled = RandomSearch(candidates=1, threads=1).compile(judge, TRAIN, exact)
    assert compiled.candidates == (Candidate("zero-shot", demos(), 50.0),)
    assert (compiled.score, compiled.baseline, compiled.lm_calls) == (50.0, 50.0, 6)


def test_random_searchs_zero_shot_is_the_program_as_it_is() -> None:
    judge.params = demos(("given", "POS"))  # reset after the test
    with lmdsl.using(model=lmdsl.ScriptedModel(learner("pos"))):
        compiled = RandomSearch(candidates=1, threads=1).compile(judge, TRAIN, exact, devset=DEV)
    assert compiled.candidates == (Candidate("zero-shot", demos(("given", "POS")), 75.0),)


def test_random_search_with_no_budget_returns_the_program_as_it_was() -> None:
    model = lmdsl.ScriptedModel([])
    with lmdsl.using(model=model):
        compiled = RandomSearch(max_lm_calls=0).compile(judge, TRAIN, exact, devset=DEV)
    assert compiled.params == demos()
    assert (compiled.score, compiled.baseline, compiled.candidates) == (None, None, ())
    assert (compiled.lm_calls, compiled.tokens) == (0, 0)
    assert model.requests == []


@lmdsl.fuzzy(strategy=lmdsl.chain_of_thought)
def pondered(text: str) -> str:
    """Say pos or neg, after some thought."""


@lmdsl.program
def ponder(text: str) -> str:
    return pondered(text)


def test_bootstrapped_demos_keep_the_runs_reasoning() -> None:
    def thinking(request: Request) -> dict[str, Any]:
        return {"reasoning": f"{asked(request)} sounds {ANSWERS[asked(request)]}", "pondered": ANSWERS[asked(request)]}

    try:
        with lmdsl.using(model=lmdsl.ScriptedModel(thinking)):
            compiled = BootstrapFewShot(max_demos=2, max_labeled=0).compile(ponder, TRAIN, exact)
        assert compiled.params == {
            "pondered": lmdsl.Params(
                "Say pos or neg, after some thought.",
                (
                    lmdsl.Demo({"text": "good"}, "pos", "good sounds pos"),
                    lmdsl.Demo({"text": "bad"}, "neg", "bad sounds neg"),
                ),
            )
        }
    finally:
        pondered.reset_params()


@lmdsl.program
def careful(text: str) -> str:
    try:
        return mood(text)
    except lmdsl.OutputError:
        return "neg"  # a fallback when the model gives no valid answer


def test_a_step_that_failed_in_a_passing_run_gives_no_demo() -> None:
    def unsure_of_bad(request: Request) -> Any:
        return "not json" if asked(request) == "bad" else {"mood": ANSWERS[asked(request)]}

    with lmdsl.using(model=lmdsl.ScriptedModel(unsure_of_bad)):
        compiled = BootstrapFewShot(max_demos=3, max_labeled=0).compile(careful, TRAIN, exact)
    # "bad" passed through the fallback: its run counts, but its failed step is no demo
    assert compiled.params == demos(("good", "pos"), ("nice", "pos"))
    assert compiled.lm_calls == 1 + 3 + 1  # "good", "bad" (an attempt and two repairs), "nice"


def test_a_spent_budget_says_what_was_spent_and_the_limits() -> None:
    from lmdsl.compiler import Budget, BudgetExhausted

    budget = Budget(max_lm_calls=0)
    with pytest.raises(BudgetExhausted) as caught:
        budget.check()
    assert str(caught.value) == "budget spent: 0 LM calls (max 0), 0 tokens (max None)"
    Budget().check()  # no limits: never spent
