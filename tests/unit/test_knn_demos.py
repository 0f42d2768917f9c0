"""Demos chosen per call (`Params.nearest`, `KNNFewShot`): the demos a call shows are the pool's
nearest to its inputs; the pool round-trips through parameter files (versioned, checked); the
optimizer builds pools from labels (and bootstrapped runs) and keeps them when they score better."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmdsl
from lmdsl.errors import ArtifactError, ConfigurationError, InputError
from lmdsl.lm.types import Request
from lmdsl.params import Demo, Nearest, Params, dump_params
from lmdsl.retrieval.nearest import NearestDemos

Topic = Literal["sport", "food", "music"]


@lmdsl.fuzzy
def topic(text: str) -> Topic:
    """Say what the text is about."""


POOL = (
    Demo({"text": "the striker scored a goal"}, "sport"),
    Demo({"text": "a bowl of ramen noodles"}, "food"),
    Demo({"text": "the band played guitar"}, "music"),
    Demo({"text": "the goalkeeper saved a penalty"}, "sport"),
    Demo({"text": "fresh bread and butter"}, "food"),
    Demo({"text": "a violin concerto"}, "music"),
)
LABELS = {demo.inputs["text"]: demo.output for demo in POOL}


def shown(request: Request) -> list[str]:
    """The inputs of the demos a request shows, in order."""
    return [m.content.removeprefix("text: ") for m in request.messages[1 : request.prefix_length] if m.role == "user"]


def copies_the_last_demo(request: Request) -> dict[str, str]:
    """A small model's habit: answer what the demo right before the input answered."""
    demos = shown(request)
    return {"topic": LABELS[demos[-1]] if demos else "music"}


def test_a_call_shows_the_demos_nearest_to_its_input_the_nearest_last() -> None:
    model = lmdsl.ScriptedModel(copies_the_last_demo)
    params = Params("Say what the text is about.", (), Nearest(2, POOL))
    with lmdsl.using(model=model):
        topic.params = params
        try:
            assert topic(text="a goal from the striker in the last minute") == "sport"
            assert topic(text="noodles with butter") == "food"
            assert topic(text="zzz") == "sport"  # no word in common: the first two of the pool, the first last
        finally:
            topic.reset_params()
    first, second, third = (shown(r) for r in model.requests)
    assert first[-1] == "the striker scored a goal" and len(first) == 2
    assert set(second) == {"a bowl of ramen noodles", "fresh bread and butter"}
    assert third == ["a bowl of ramen noodles", "the striker scored a goal"]


def test_fixed_demos_come_first_and_overlays_choose_per_call_too() -> None:
    model = lmdsl.ScriptedModel(copies_the_last_demo)
    fixed = Demo({"text": "an opera singer"}, "music")
    program = lmdsl.program(lambda text: topic(text=text))
    with lmdsl.using(model=model), program.with_params({"topic": Params("Say.", (fixed,), Nearest(1, POOL))}):
        assert program("bread") == "food"
    assert shown(model.requests[0]) == ["an opera singer", "fresh bread and butter"]
    assert topic.params.nearest is None  # the function's own parameters are untouched


def test_inspect_shows_the_pool_a_call_chooses_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmdsl.cli import main

    @lmdsl.program
    def classify(text: str) -> str:
        return topic(text=text)

    fixed = Demo({"text": "an opera singer"}, "music")
    with classify.with_params({"topic": Params("Say.", (fixed,), Nearest(2, POOL[:2]))}):
        data = dump_params(classify.name, classify.functions)
    path = tmp_path / "params.json"
    path.write_text(json.dumps(data))
    assert main(["inspect", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "== topic (signature " in shown and "1 demo(s), and per call the 2 nearest of a pool of 2)" in shown
    assert shown.endswith(
        '[instructions]\nSay.\n[demo 1] inputs: {"text": "an opera singer"}\n  output: "music"\n'
        '[pool demo 1] inputs: {"text": "the striker scored a goal"}\n  output: "sport"\n'
        '[pool demo 2] inputs: {"text": "a bowl of ramen noodles"}\n  output: "food"\n'
    )


def test_the_pool_round_trips_through_a_parameter_file(tmp_path: Path) -> None:
    @lmdsl.program
    def classify(text: str) -> str:
        return topic(text=text)

    path = tmp_path / "params.json"
    with classify.with_params({"topic": Params("Say.", (), Nearest(3, POOL))}):
        data = dump_params(classify.name, classify.functions)  # the overlay's parameters
    path.write_text(json.dumps(data))
    entry = data["functions"]["topic"]
    assert entry["nearest"]["version"] == 1 and entry["nearest"]["k"] == 3 and len(entry["nearest"]["pool"]) == 6
    classify.load(path)
    try:
        assert topic.params.nearest == Nearest(3, POOL)
    finally:
        topic.reset_params()
    assert "nearest" not in dump_params(classify.name, classify.functions)["functions"]["topic"]

    changes: list[tuple[Callable[[dict[str, Any]], object], str]] = [
        (lambda n: n.update(version=2), "format version 2"),
        (lambda n: n.update(k=0), "1 <= k <= 64"),
        (lambda n: n.update(pool=[]), "a pool of demos"),
        (lambda n: n.update(k="3"), "nearest.k"),
        (lambda n: n["pool"][0].update(output="weather"), "does not fit the return type"),
        (lambda n: n.update(code="x"), "Extra inputs"),
    ]
    for change, message in changes:
        broken = json.loads(json.dumps(data))
        change(broken["functions"]["topic"]["nearest"])
        path.write_text(json.dumps(broken))
        with pytest.raises(ArtifactError, match=message):
            classify.load(path)
    assert topic.params.nearest is None  # nothing was loaded from a file that failed


def test_check_params_refuses_a_bad_pool() -> None:
    with pytest.raises(InputError, match="1 <= k <= 64"):
        topic.check_params(Params("x", (), Nearest(65, POOL)))
    with pytest.raises(InputError, match="does not fit"):
        topic.check_params(Params("x", (), Nearest(1, (Demo({"text": "t"}, "weather"),))))


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=40), k=st.integers(1, 10))
def test_any_input_picks_k_distinct_demos_of_the_pool(text: str, k: int) -> None:
    picked = NearestDemos(POOL).pick({"text": text}, k)
    assert len(picked) == min(k, len(POOL)) and len(set(picked)) == len(picked)
    assert all(0 <= i < len(POOL) for i in picked)


DEV = [
    lmdsl.Example(text="a goal in extra time", topic="sport"),
    lmdsl.Example(text="noodles in a bowl", topic="food"),
    lmdsl.Example(text="guitar solo by the band", topic="music"),
    lmdsl.Example(text="the goalkeeper and the striker", topic="sport"),
]
TRAIN = [lmdsl.Example(text=demo.inputs["text"], topic=demo.output) for demo in POOL]


def test_knn_few_shot_builds_the_pool_from_labels_and_keeps_it_when_it_scores_better() -> None:
    @lmdsl.program
    def classify(text: str) -> str:
        return topic(text=text)

    def right(example: lmdsl.Example, prediction: str) -> bool:
        return bool(prediction == example.topic)

    with lmdsl.using(model=lmdsl.ScriptedModel(copies_the_last_demo)):
        compiled = lmdsl.KNNFewShot(k=2, threads=1).compile(classify, TRAIN, right, devset=DEV)
    zero, nearest = compiled.candidates
    assert (zero.score, nearest.score) == (25.0, 100.0)  # zero-shot says "music" to everything
    chosen = compiled.params["topic"].nearest
    assert chosen is not None and chosen.k == 2 and {d.inputs["text"] for d in chosen.pool} == set(LABELS)
    assert compiled.params["topic"].demos == () and compiled.lm_calls == 2 * len(DEV)


def test_knn_few_shot_checks_its_options() -> None:
    with pytest.raises(ConfigurationError, match="k must be"):
        lmdsl.KNNFewShot(k=0)
    with pytest.raises(ConfigurationError, match="max_pool"):
        lmdsl.KNNFewShot(max_pool=0)
