"""Sampling and refining strategies (`best_of`, `refine`, `majority`) and custom strategies, on the scripted backend."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.lm.types import Message, Request


class Label(BaseModel):
    label: str
    score: float


def by_rollout(replies: Mapping[int, str | dict[str, object]]) -> lmdsl.ScriptedModel:
    """A scripted model answering each request from its rollout number (retries keep the rollout)."""
    return lmdsl.ScriptedModel(lambda request: replies[request.rollout])


def scorer(scores: Mapping[str, float], seen: list[dict[str, Any]] | None = None) -> Callable[..., float]:
    """A reward `(output, *, audience)` that looks the output up in `scores` and logs what it saw."""

    def reward(output: str, *, audience: str) -> float:
        if seen is not None:
            seen.append({"output": output, "audience": audience})
        return scores[output]

    return reward


# -- best_of --------------------------------------------------------------------------------


def test_best_of_samples_n_rollouts_and_keeps_the_highest_reward() -> None:
    seen: list[dict[str, Any]] = []

    @lmdsl.fuzzy(strategy=lmdsl.best_of(3, reward=scorer({"ok": 0.5, "great": 0.9, "meh": 0.1}, seen)))
    def slogan(product: str, audience: str) -> str:
        """Write a slogan for the product."""

    model = by_rollout({0: {"slogan": "ok"}, 1: {"slogan": "great"}, 2: {"slogan": "meh"}})
    with lmdsl.using(model=model):
        assert slogan("tea", "students") == "great"
    assert [r.rollout for r in model.requests] == [0, 1, 2]
    assert [r.temperature for r in model.requests] == [0.7, 0.7, 0.7]
    assert len({r.messages for r in model.requests}) == 1  # the same prompt, resampled
    assert seen == [{"output": o, "audience": "students"} for o in ("ok", "great", "meh")]
    record = lmdsl.history(1)[0]
    assert record.output == "great"
    assert record.details["reward"] == 0.9
    assert record.details["samples"] == [
        {"output": "ok", "reward": 0.5},
        {"output": "great", "reward": 0.9},
        {"output": "meh", "reward": 0.1},
    ]
    assert [json.loads(a.text)["slogan"] for a in record.attempts] == ["ok", "great", "meh"]
    assert [a.request.rollout for a in record.attempts] == [0, 1, 2]


def test_best_of_uses_its_temperature_and_ties_go_to_the_earliest_sample() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.best_of(2, reward=lambda output: 1.0, temperature=1.3))
    def slogan(product: str) -> str:
        """Write a slogan."""

    model = by_rollout({0: {"slogan": "first"}, 1: {"slogan": "second"}})
    with lmdsl.using(model=model):
        assert slogan("tea") == "first"
    assert [(r.rollout, r.temperature) for r in model.requests] == [(0, 1.3), (1, 1.3)]


def test_best_of_stops_early_once_a_sample_reaches_the_threshold() -> None:
    reward = scorer({"a": 0.2, "b": 0.85, "c": 1.0, "d": 1.0})

    @lmdsl.fuzzy(strategy=lmdsl.best_of(4, reward=reward, threshold=0.8))
    def slogan(audience: str) -> str:
        """Write a slogan."""

    model = by_rollout({0: {"slogan": "a"}, 1: {"slogan": "b"}, 2: {"slogan": "c"}, 3: {"slogan": "d"}})
    with lmdsl.using(model=model):
        assert slogan("kids") == "b"
    assert [r.rollout for r in model.requests] == [0, 1]
    record = lmdsl.history(1)[0]
    assert [s["output"] for s in record.details["samples"]] == ["a", "b"]
    assert record.details["reward"] == 0.85


def test_best_of_skips_samples_that_fail_validation_or_checks() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.best_of(4, reward=scorer({"x": 0.3, "y": 0.6, "banned": 5.0})), retries=1)
    def slogan(audience: str) -> str:
        """Write a slogan."""

    @slogan.ensure
    def allowed(output: str) -> None:
        if output == "banned":
            raise lmdsl.Retry("that word is banned")

    model = by_rollout({0: {"slogan": "x"}, 1: "not json", 2: {"slogan": "banned"}, 3: {"slogan": "y"}})
    with lmdsl.using(model=model):
        assert slogan("adults") == "y"
    record = lmdsl.history(1)[0]
    assert record.details["samples"] == [{"output": "x", "reward": 0.3}, {"output": "y", "reward": 0.6}]
    # every attempt of every sample is kept, the failed ones with their errors
    assert [a.request.rollout for a in record.attempts] == [0, 1, 1, 2, 2, 3]
    errors = [a.error for a in record.attempts]
    assert errors[0] is None and errors[-1] is None
    assert errors[1] is not None and "not valid JSON" in errors[1]
    assert errors[3] == errors[4] == "that word is banned"


def test_best_of_raises_output_error_when_every_sample_fails() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.best_of(3, reward=lambda output: 1.0), retries=1)
    def count(text: str) -> int:
        """Count the words."""

    model = lmdsl.ScriptedModel(lambda request: {"count": "many"})
    with lmdsl.using(model=model), pytest.raises(lmdsl.OutputError) as caught:
        count("a b")
    assert len(caught.value.attempts) == 6  # 3 samples x (1 + 1 retry)
    assert [a.request.rollout for a in caught.value.attempts] == [0, 0, 1, 1, 2, 2]
    assert lmdsl.history(1)[0].error is not None


# -- refine ---------------------------------------------------------------------------------


def test_refine_starts_cold_and_feeds_back_the_answer_score_and_advice() -> None:
    def reward(output: str, *, audience: str) -> tuple[float, str]:
        return (1.0, "") if "!" in output else (0.25, f"Make it exciting for {audience}.")

    @lmdsl.fuzzy(strategy=lmdsl.refine(4, reward=reward, threshold=0.9, temperature=0.6))
    def slogan(product: str, audience: str) -> str:
        """Write a slogan for the product."""

    model = by_rollout({0: {"slogan": "Tea."}, 1: {"slogan": "Tea!"}, 2: {"slogan": "unused"}})
    with lmdsl.using(model=model):
        assert slogan("tea", "students") == "Tea!"
    first, second = model.requests  # stopped as soon as the threshold was reached
    assert (first.rollout, first.temperature) == (0, 0.0)
    assert (second.rollout, second.temperature) == (1, 0.6)
    assert second.messages[:-2] == first.messages
    answer, critique = second.messages[-2:]
    assert answer.role == "assistant" and json.loads(answer.content) == {"slogan": "Tea."}
    assert critique.role == "user"
    assert "0.25" in critique.content and "0.9" in critique.content
    assert "Make it exciting for students." in critique.content
    record = lmdsl.history(1)[0]
    assert record.details["refinements"] == [
        {"output": "Tea.", "reward": 0.25, "feedback": "Make it exciting for students."},
        {"output": "Tea!", "reward": 1.0, "feedback": ""},
    ]
    assert record.details["reward"] == 1.0
    assert len(record.attempts) == 2


def test_refine_stops_at_once_when_the_first_answer_is_good_enough() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.refine(3, reward=lambda output: True))
    def slogan(product: str) -> str:
        """Write a slogan."""

    model = by_rollout({0: {"slogan": "fine"}})
    with lmdsl.using(model=model):
        assert slogan("tea") == "fine"
    assert len(model.requests) == 1
    assert lmdsl.history(1)[0].details["refinements"] == [{"output": "fine", "reward": 1.0, "feedback": ""}]


def test_refine_returns_the_best_answer_when_the_threshold_is_never_reached() -> None:
    scores = {"a": 0.1, "b": 0.7, "c": 0.4}

    @lmdsl.fuzzy(strategy=lmdsl.refine(3, reward=lambda output: scores[output]))
    def slogan(product: str) -> str:
        """Write a slogan."""

    model = by_rollout({0: {"slogan": "a"}, 1: {"slogan": "b"}, 2: {"slogan": "c"}})
    with lmdsl.using(model=model):
        assert slogan("tea") == "b"
    first, second, third = model.requests
    # each refinement sees only the previous answer and its critique, not the whole history
    assert len(third.messages) == len(second.messages) == len(first.messages) + 2
    assert json.loads(third.messages[-2].content) == {"slogan": "b"}
    assert "scored 0.7" in third.messages[-1].content and "at least 1" in third.messages[-1].content
    record = lmdsl.history(1)[0]
    assert [(r["output"], r["reward"]) for r in record.details["refinements"]] == [("a", 0.1), ("b", 0.7), ("c", 0.4)]
    assert record.details["reward"] == 0.7
    assert [a.request.rollout for a in record.attempts] == [0, 1, 2]


def test_refine_keeps_the_best_valid_answer_when_a_refinement_fails_validation() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.refine(2, reward=lambda output: 0.5), retries=0)
    def slogan(product: str) -> str:
        """Write a slogan."""

    model = by_rollout({0: {"slogan": "poor"}, 1: "not json"})
    with lmdsl.using(model=model):
        assert slogan("tea") == "poor"
    assert len(model.requests) == 2


# -- majority -------------------------------------------------------------------------------


def test_majority_returns_the_most_common_output_and_the_votes() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.majority(5))
    def topic(text: str) -> str:
        """Name the topic."""

    model = by_rollout({i: {"topic": t} for i, t in enumerate(["cats", "dogs", "cats", "birds", "cats"])})
    with lmdsl.using(model=model):
        assert topic("...") == "cats"
    assert [(r.rollout, r.temperature) for r in model.requests] == [(i, 0.7) for i in range(5)]
    record = lmdsl.history(1)[0]
    assert record.details["votes"] == {'{"topic": "cats"}': 3, '{"topic": "dogs"}': 1, '{"topic": "birds"}': 1}
    assert len(record.attempts) == 5


def test_majority_tie_goes_to_the_earliest_output() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.majority(4, temperature=0.9))
    def topic(text: str) -> str:
        """Name the topic."""

    model = by_rollout({i: {"topic": t} for i, t in enumerate(["dogs", "cats", "cats", "dogs"])})
    with lmdsl.using(model=model):
        assert topic("...") == "dogs"
    assert {r.temperature for r in model.requests} == {0.9}


def test_majority_counts_equal_pydantic_models_together() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.majority(3))
    def classify(text: str) -> Label:
        """Classify the text."""

    model = by_rollout(
        {
            0: {"label": "spam", "score": 0.5},
            1: '{"score": 1, "label": "ham"}',  # the same model as rollout 2, written differently
            2: {"label": "ham", "score": 1.0},
        }
    )
    with lmdsl.using(model=model):
        result = classify("buy now")
    assert isinstance(result, Label) and (result.label, result.score) == ("ham", 1.0)
    assert sorted(lmdsl.history(1)[0].details["votes"].values()) == [1, 2]


def test_majority_counts_equal_dicts_together_whatever_their_key_order() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.majority(3))
    def counts(text: str) -> dict[str, int]:
        """Count each word."""

    model = by_rollout({0: {"counts": {"x": 1}}, 1: {"counts": {"a": 1, "b": 2}}, 2: {"counts": {"b": 2, "a": 1}}})
    with lmdsl.using(model=model):
        assert counts("a b b") == {"a": 1, "b": 2}


def test_majority_skips_failed_samples_and_fails_only_when_all_do() -> None:
    @lmdsl.fuzzy(strategy=lmdsl.majority(3), retries=0)
    def topic(text: str) -> str:
        """Name the topic."""

    model = by_rollout({0: "nonsense", 1: {"topic": "dogs"}, 2: {"topic": 7}})
    with lmdsl.using(model=model):
        assert topic("...") == "dogs"
    record = lmdsl.history(1)[0]
    assert record.details["votes"] == {'{"topic": "dogs"}': 1}
    assert [a.error is None for a in record.attempts] == [False, True, False]

    with lmdsl.using(model=by_rollout({0: "x", 1: "y", 2: "z"})), pytest.raises(lmdsl.OutputError) as caught:
        topic("...")
    assert [a.text for a in caught.value.attempts] == ["x", "y", "z"]


# -- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: lmdsl.best_of(0, reward=lambda o: 1.0), "n must be a whole number >= 1"),
        (lambda: lmdsl.refine(0, reward=lambda o: 1.0), "n must be a whole number >= 1"),
        (lambda: lmdsl.majority(0), "n must be a whole number >= 1"),
        (lambda: lmdsl.majority(2.5), "n must be a whole number >= 1"),  # type: ignore[arg-type]
        (lambda: lmdsl.best_of(3, reward=lambda o: 1.0, temperature=0.0), "sampling needs a temperature"),
        (lambda: lmdsl.refine(3, reward=lambda o: 1.0, temperature=0.0), "sampling needs a temperature"),
        (lambda: lmdsl.majority(3, temperature=0.0), "sampling needs a temperature"),
        (lambda: lmdsl.majority(3, temperature=2.5), "sampling needs a temperature"),
        (lambda: lmdsl.best_of(3, reward=None), "best_of needs reward="),  # type: ignore[arg-type]
        (lambda: lmdsl.refine(3, reward=None), "refine needs reward="),  # type: ignore[arg-type]
        (lambda: lmdsl.BestOf(n=3), "best_of needs reward="),
    ],
)
def test_invalid_strategy_configuration_is_a_signature_error(make: Callable[[], object], fragment: str) -> None:
    with pytest.raises(lmdsl.SignatureError, match=fragment):
        make()


@pytest.mark.parametrize("strategy", [lmdsl.best_of, lmdsl.refine])
def test_a_reward_naming_a_non_input_fails_at_decoration(strategy: Callable[..., lmdsl.Strategy]) -> None:
    def reward(output: str, *, audeince: str) -> float:
        return 1.0

    with pytest.raises(lmdsl.SignatureError, match=r"reward .*'audeince' is not an input.*did you mean \"audience\""):

        @lmdsl.fuzzy(strategy=strategy(2, reward=reward))
        def slogan(product: str, audience: str) -> str:
            """Write a slogan."""


def test_a_strategy_must_be_a_strategy_value() -> None:
    not_a_strategy: Any = "best_of"
    with pytest.raises(lmdsl.SignatureError, match="strategy must be a strategy value"):

        @lmdsl.fuzzy(strategy=not_a_strategy)
        def slogan(product: str) -> str:
            """Write a slogan."""


# -- custom strategies ----------------------------------------------------------------------

SEEN: list[tuple[str, dict[str, Any], Any]] = []
PREPARED: list[lmdsl.Signature] = []


class Twice(lmdsl.Strategy):
    """Answer, then ask for a second opinion on the first answer; keep the second."""

    def prepare(self, signature: lmdsl.Signature) -> Any:
        PREPARED.append(signature)
        return f"state of {signature.name}"

    def run(self, run: lmdsl.Run) -> lmdsl.Generation:
        SEEN.append((run.function, dict(run.inputs), run.state))
        first = run.generate()
        second = run.generate(
            rollout=1,
            temperature=0.3,
            feedback=(Message("assistant", run.render(first.output)), Message("user", "Check it and answer again.")),
        )
        return second._replace(attempts=first.attempts + second.attempts, details={"first": first.output})


def test_a_custom_strategy_can_generate_twice() -> None:
    SEEN.clear()
    PREPARED.clear()

    @lmdsl.fuzzy(strategy=Twice(), retries=1)
    def add(a: int, b: int) -> int:
        """Add the numbers."""

    assert [s.name for s in PREPARED] == ["add"]  # prepared once, at decoration

    def reply(request: Request) -> str | dict[str, object]:
        if request.rollout == 0:
            return {"add": 5}
        if request.messages[-1].content == "Check it and answer again.":
            return "oops"  # the second opinion is invalid once, then repaired by the call loop
        return {"add": 4}

    model = lmdsl.ScriptedModel(reply)
    with lmdsl.using(model=model):
        assert add(2, b=2) == 4
    assert SEEN == [("test_a_custom_strategy_can_generate_twice.<locals>.add", {"a": 2, "b": 2}, "state of add")]
    first, second, repaired = model.requests
    assert (first.rollout, first.temperature) == (0, 0.0)
    assert (second.rollout, second.temperature) == (1, 0.3)
    assert [m.content for m in second.messages[-2:]] == ['{"add": 5}', "Check it and answer again."]
    assert repaired.rollout == 1 and repaired.messages[:-2] == second.messages  # the call loop's retry
    record = lmdsl.history(1)[0]
    assert record.output == 4 and record.details == {"first": 5}
    assert [a.text for a in record.attempts] == ['{"add": 5}', "oops", '{"add": 4}']
    assert len(PREPARED) == 1
