"""Compiling a program of several steps where only the final answer is labelled: a two-hop search
program (query, search, query given notes, search, answer) over BM25, on a scripted model.

Bootstrapping gives the intermediate (query-writing) steps demos from the runs whose final answer
passed, and only from those; the candidate ladder runs each training example once however many
rungs it climbs; RandomSearch scores a candidate with the same demos as an earlier one without
running it, and screens candidates on a minibatch before scoring them in full."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import lmdsl
from lmdsl.compiler.base import Budget
from lmdsl.compiler.few_shot import BootstrapFewShot, RandomSearch, candidate_ladder
from lmdsl.lm.types import Request
from lmdsl.retrieval import BM25

# Each question needs two passages: the first names a person, the second says where they were born.
FACTS = {
    "Which city was the author of Dune born in?": ("Dune novel", "Frank Herbert birthplace", "Tacoma"),
    "Which city was the director of Alien born in?": ("Alien film", "Ridley Scott birthplace", "South Shields"),
    "Which city was the painter of Guernica born in?": ("Guernica painting", "Pablo Picasso birthplace", "Malaga"),
    "Which city was the composer of Bolero born in?": ("Bolero music", "Maurice Ravel birthplace", "Ciboure"),
    "Which city was the writer of Ulysses born in?": ("Ulysses novel", "James Joyce birthplace", "Dublin"),
    "Which city was the singer of Imagine born in?": ("Imagine song", "John Lennon birthplace", "Liverpool"),
}
PASSAGES = [
    "Dune novel: Dune is a 1965 novel by Frank Herbert.",
    "Frank Herbert birthplace: Frank Herbert was born in Tacoma.",
    "Alien film: Alien is a 1979 film directed by Ridley Scott.",
    "Ridley Scott birthplace: Ridley Scott was born in South Shields.",
    "Guernica painting: Guernica is a 1937 painting by Pablo Picasso.",
    "Pablo Picasso birthplace: Pablo Picasso was born in Malaga.",
    "Bolero music: Bolero is a 1928 orchestral piece by Maurice Ravel.",
    "Maurice Ravel birthplace: Maurice Ravel was born in Ciboure.",
    "Ulysses novel: Ulysses is a 1922 novel by James Joyce.",
    "James Joyce birthplace: James Joyce was born in Dublin.",
    "Imagine song: Imagine is a 1971 song by John Lennon.",
    "John Lennon birthplace: John Lennon was born in Liverpool.",
]
# The questions whose first query the scripted model gets wrong (it searches for the city instead).
CONFUSED = {"Which city was the director of Alien born in?", "Which city was the composer of Bolero born in?"}


@lmdsl.fuzzy
def first_query(question: str) -> str:
    """Write a search query for the first thing the question needs."""


@lmdsl.fuzzy
def next_query(question: str, notes: list[str]) -> str:
    """Write a search query for what the notes do not tell yet."""


@lmdsl.fuzzy
def final_answer(question: str, notes: list[str]) -> str:
    """Answer the question from the notes."""


SEARCH = BM25(PASSAGES)


@lmdsl.program
def two_hop(question: str) -> str:
    notes = [p.text for p in SEARCH(first_query(question=question), k=1)]
    notes += [p.text for p in SEARCH(next_query(question=question, notes=notes), k=1)]
    return final_answer(question=question, notes=notes)


def inputs(request: Request) -> dict[str, Any]:
    lines = request.messages[-1].content.split("\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return {"question": fields["question"], "notes": json.loads(fields.get("notes", "[]"))}


def reply(request: Request) -> dict[str, str]:
    """A model that follows the notes: a good first query unless the question confuses it, a
    second query for the person the notes name, and the city when the notes hold it."""
    system = request.messages[0].content
    given = inputs(request)
    first, second, city = FACTS[given["question"]]
    if system.startswith("Write a search query for the first"):
        return {"first_query": "city birthplace" if given["question"] in CONFUSED else first}
    if system.startswith("Write a search query for what"):
        named = next((s for _, s, _ in FACTS.values() if s.split(" birth")[0] in " ".join(given["notes"])), "")
        return {"next_query": named or "born"}
    found = any(city in note for note in given["notes"])
    return {"final_answer": city if found else "unknown"}


def right(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction == example.answer)


TRAIN = [lmdsl.Example(question=q, answer=city) for q, (_, _, city) in FACTS.items()]


def test_bootstrapping_gives_every_step_demos_from_the_runs_that_passed() -> None:
    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        compiled = BootstrapFewShot(max_demos=3, max_labeled=0).compile(two_hop, TRAIN, right)
    params = compiled.params
    assert set(params) == {"first_query", "next_query", "final_answer"}
    asked = [demo.inputs["question"] for demo in params["first_query"].demos]
    # the first, third and fifth questions pass; the confused ones (second, fourth) give no demos
    assert asked == [TRAIN[0].question, TRAIN[2].question, TRAIN[4].question]
    assert [demo.output for demo in params["first_query"].demos] == ["Dune novel", "Guernica painting", "Ulysses novel"]
    assert [demo.output for demo in params["next_query"].demos] == [
        "Frank Herbert birthplace",
        "Pablo Picasso birthplace",
        "James Joyce birthplace",
    ]
    assert params["next_query"].demos[0].inputs["notes"] == [PASSAGES[0]]
    assert [demo.output for demo in params["final_answer"].demos] == ["Tacoma", "Malaga", "Dublin"]
    assert compiled.lm_calls == 5 * 3  # five runs of three steps: the walk stops at the third pass


def test_a_program_of_several_steps_gets_no_labelled_demos_but_every_step_bootstrapped() -> None:
    """The labels name no step's output, so the labelled rung is the zero-shot one; the
    bootstrapped rungs give all three steps demos."""
    model = lmdsl.ScriptedModel(reply)
    bootstrapper = BootstrapFewShot(max_demos=2, max_labeled=2, seed=0)
    with lmdsl.using(model=model), pytest.warns(lmdsl.UnusedLabelsWarning):
        ladder = list(candidate_ladder(two_hop, TRAIN, right, bootstrapper, Budget(), random.Random(1), 5))
    labels = [label for label, _ in ladder]
    assert labels[:3] == ["zero-shot", "labelled", "bootstrapped"]
    assert all(not p.demos for p in ladder[1][1].values())
    for _, params in ladder[2:]:
        assert all(params[name].demos for name in ("first_query", "next_query", "final_answer"))
    # each of the six examples is run at most once over all the rungs: 3 calls per run
    assert len(model.requests) <= 3 * len(TRAIN)
    first_questions = [
        inputs(r)["question"]
        for r in model.requests
        if r.messages[0].content.startswith("Write a search query for the first")
    ]
    assert len(first_questions) == len(set(first_questions))


def test_random_search_does_not_score_the_same_demos_twice() -> None:
    model = lmdsl.ScriptedModel(reply)
    with lmdsl.using(model=model), pytest.warns(lmdsl.UnusedLabelsWarning):
        compiled = RandomSearch(candidates=3, max_demos=2, max_labeled=2, threads=1).compile(two_hop, TRAIN, right)
    zero, labelled, bootstrapped = compiled.candidates
    assert labelled.label == "labelled (the same as zero-shot)" and labelled.score == zero.score
    assert zero.score == pytest.approx(100 * 4 / 6) and bootstrapped.score == pytest.approx(100 * 4 / 6)
    # zero-shot scored (6 runs), bootstrapping ran 3 examples (the third passed second), the bootstrapped
    # candidate scored (6 runs): 15 runs of 3 calls, nothing for the labelled candidate
    assert compiled.lm_calls == 15 * 3


@pytest.mark.filterwarnings("error::lmdsl.UnusedLabelsWarning")  # max_labeled=0: no labels wanted, none warned of
def test_random_search_screens_candidates_on_a_minibatch_before_the_whole_dev_set() -> None:
    """A dev set of 4 with minibatch=2: the zero-shot scores 50% on the minibatch (one of the two
    confused questions is in it), so a candidate scoring less there is not scored in full."""
    dev = [TRAIN[1], TRAIN[0], TRAIN[3], TRAIN[2]]
    screen = sorted(random.Random(0).sample(range(len(dev)), 2))
    calls: list[int] = []

    def worse_with_demos(request: Request) -> dict[str, str]:
        calls.append(request.prefix_length)
        if request.prefix_length > 1 and request.messages[0].content.startswith("Answer"):
            return {"final_answer": "unknown"}  # demos make this model worse
        return reply(request)

    with lmdsl.using(model=lmdsl.ScriptedModel(worse_with_demos)):
        compiled = RandomSearch(candidates=3, max_demos=2, max_labeled=0, threads=1, minibatch=2).compile(
            two_hop, TRAIN, right, devset=dev
        )
    zero, labelled, bootstrapped = compiled.candidates
    assert zero.score == 50.0 and labelled.score == 50.0
    assert bootstrapped.score is None and bootstrapped.label.startswith("bootstrapped (minibatch 0.0: not scored")
    assert compiled.params == zero.params
    with_demos = [n for n in calls if n > 1]
    assert len(with_demos) == 3 * len(screen)  # the bootstrapped candidate ran on the minibatch only
