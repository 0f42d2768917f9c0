"""GEPA on scripted models: the Pareto bookkeeping, the acceptance rule, merges, exact budgets,
the reflection prompt's cap, feedback from `Score`, failed checks and parse failures reaching the
reflection, the state file (and hostile copies of it), and `Score` metrics in every optimizer.

The task model answers a word's label only when the instruction in force states it
("awful=neg."); otherwise it says "pos". The scripted reflector appends the facts the feedback
reveals ("the answer for awful is neg") to the current instruction, so better instructions come
only through the feedback path."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmdsl
from lmdsl.compiler import GEPA, BootstrapFewShot, RandomSearch, compile_program, optimize
from lmdsl.compiler.gepa_pool import (
    Member,
    State,
    ancestors,
    fronts,
    lineage,
    load_state,
    merge_subsample,
    merge_triplet,
    merged,
    non_dominated,
    select_parent,
    wins,
)
from lmdsl.lm.types import Request
from lmdsl.scores import metric_feedback, metric_score


@lmdsl.fuzzy
def mood(text: str) -> str:
    """Say pos or neg."""


@lmdsl.program
def judge(text: str) -> str:
    return mood(text)


LABELS = {
    "good": "pos",
    "bad": "neg",
    "nice": "pos",
    "awful": "neg",
    "fine": "pos",
    "grim": "neg",
    "sunny": "pos",
    "dull": "neg",
}
DATA = [lmdsl.Example(text=t, label=label) for t, label in LABELS.items()]
TRAIN, VAL = DATA[:6], DATA


def explained(example: lmdsl.Example, prediction: str) -> lmdsl.Score:
    right = prediction == example.label
    return lmdsl.Score(right, feedback="" if right else f"the answer for {example.text} is {example.label}")


def plain(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction == example.label)


def reflecting(request: Request) -> bool:
    return '"instruction"' in (request.json_schema or "")


def reflector_adds_facts(request: Request) -> dict[str, Any]:
    text = request.messages[-1].content
    current = re.search(r"current_instruction: (.*)", text)
    facts = sorted(set(re.findall(r"answer for (\w+) is (\w+)", text)))
    return {"instruction": (current.group(1) if current else "") + "".join(f" {w}={label}." for w, label in facts)}


def knows(request: Request) -> dict[str, Any]:
    """The task model: a word's label when the instruction states it, else "pos"."""
    if reflecting(request):
        return reflector_adds_facts(request)
    word = request.messages[request.prefix_length].content.split(": ", 1)[1]
    found = re.search(rf"\b{re.escape(word)}=(\w+)", request.messages[0].content)
    return {"mood": found.group(1) if found else "pos"}


@pytest.fixture
def model() -> Iterator[lmdsl.ScriptedModel]:
    scripted = lmdsl.ScriptedModel(knows)
    with lmdsl.using(model=scripted, cache=False):
        yield scripted
    mood.reset_params()


def member(scores: list[float], parents: tuple[int, ...] = (), **instructions: str) -> Member:
    return Member(instructions or {"mood": "x"}, parents, tuple(scores), 0, "test")


# -- the Pareto bookkeeping -----------------------------------------------------------------


def test_a_member_that_wins_one_example_only_stays_on_the_front() -> None:
    pool = [
        member([1, 1, 1, 0]),  # the best mean
        member([0, 0, 0, 1]),  # low mean, but the only one right on example 3
        member([1, 1, 0, 0]),  # nowhere better than #0
    ]
    assert fronts(pool) == [frozenset({0, 2}), frozenset({0, 2}), frozenset({0}), frozenset({1})]
    assert non_dominated(pool) == {0, 1}
    assert wins(pool) == {0: 3, 1: 1}
    draws = [select_parent(pool, random.Random(seed)) for seed in range(400)]
    assert set(draws) == {0, 1} and 0.15 < draws.count(1) / len(draws) < 0.35  # weighted 3:1


def test_of_two_members_on_the_same_fronts_the_better_one_stays() -> None:
    pool = [member([1, 0, 0]), member([1, 0, 0.5])]  # #1 ties #0 on example 0 and leads elsewhere
    assert fronts(pool)[0] == frozenset({0, 1})
    assert non_dominated(pool) == {1}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=4, max_size=4), min_size=1, max_size=6))
def test_every_front_keeps_a_survivor(rows: list[list[float]]) -> None:
    pool = [member(row) for row in rows]
    alive = non_dominated(pool)
    for front in fronts(pool):
        assert front & alive  # no example loses all the members that reach its best score
    for front in fronts(pool):
        if len(front) == 1:
            assert front <= alive  # a sole winner always survives
    assert sum(wins(pool).values()) >= len(rows[0])


def test_merge_takes_each_function_from_the_side_that_changed_it() -> None:
    pool = [
        member([0.5, 0.5, 0, 0], (), left="L0", right="R0"),
        member([1, 1, 0, 0], (0,), left="L1", right="R0"),
        member([0, 0, 1, 1], (0,), left="L0", right="R2"),
    ]
    assert ancestors(pool, 2) == {0}
    triplet = merge_triplet(pool, random.Random(0), [])
    assert triplet in ((1, 2, 0), (2, 1, 0))
    assert merged(pool, 1, 2, 0) == {"left": "L1", "right": "R2"}
    assert merge_triplet(pool, random.Random(0), [(1, 2, 0), (2, 1, 0)]) is None  # tried triples are not retried
    ids = merge_subsample(pool, 1, 2, random.Random(0), 3)
    assert len(ids) == 3 and {0, 1} & set(ids) and {2, 3} & set(ids)  # from both parents' wins
    descendant = [*pool, member([1, 1, 1, 0.5], (1,), left="L3", right="R0")]
    assert non_dominated(descendant) == {2, 3}  # #3 dominates its parent #1
    assert merge_triplet(descendant, random.Random(0), []) in ((2, 3, 0), (3, 2, 0))
    chain = lineage(descendant, 3)
    assert [step["candidate"] for step in chain] == [0, 1, 3] and chain[-1]["score"] == 87.5


# -- the search ----------------------------------------------------------------------------


def test_feedback_from_score_drives_accepted_children(model: lmdsl.ScriptedModel) -> None:
    compiled = GEPA(max_metric_calls=60, seed=1, threads=1).compile(judge, TRAIN, explained, devset=VAL)
    reflections = [r for r in model.requests if reflecting(r)]
    assert reflections and "the answer for" in reflections[0].messages[-1].content
    assert compiled.baseline == 50.0 and compiled.score is not None and compiled.score > 50.0
    chain = compiled.settings["lineage"]
    assert chain[0]["origin"] == "seed" and len(chain) >= 2
    assert [step["score"] for step in chain] == sorted(step["score"] for step in chain)
    for earlier, later in zip(chain, chain[1:]):
        assert later["parents"][0] == earlier["candidate"]
    assert "=neg." in compiled.params["mood"].instructions


def test_a_child_that_does_not_beat_its_parent_on_the_minibatch_is_dropped() -> None:
    def worse(request: Request) -> dict[str, Any]:
        if reflecting(request):
            return {"instruction": "Say pos or neg. good=neg. nice=neg. fine=neg. sunny=neg."}
        return knows(request)

    scripted = lmdsl.ScriptedModel(worse)
    with lmdsl.using(model=scripted, cache=False):
        compiled = GEPA(max_metric_calls=40, seed=0, threads=1).compile(judge, TRAIN, explained, devset=VAL)
    runs = [r for r in scripted.requests if not reflecting(r)]
    proposals = [r for r in scripted.requests if reflecting(r)]
    assert compiled.settings["candidates"] == 1 and compiled.score == compiled.baseline == 50.0
    # each iteration: the parent and the child on a 3-example minibatch; no validation run of the child
    assert len(runs) == len(VAL) + 6 * len(proposals)
    assert compiled.settings["spent"]["metric_calls"] == len(runs) <= 40


def test_a_tie_on_the_minibatch_is_not_an_improvement() -> None:
    def same(request: Request) -> dict[str, Any]:
        return (
            {"instruction": f"Say pos or neg, take {len(request.messages)}."} if reflecting(request) else knows(request)
        )

    with lmdsl.using(model=lmdsl.ScriptedModel(same), cache=False):
        compiled = GEPA(max_metric_calls=40, seed=0, threads=1).compile(judge, TRAIN, explained, devset=VAL)
    assert compiled.settings["candidates"] == 1


@pytest.mark.parametrize("limit", [34, 41, 57])
def test_the_metric_budget_is_never_passed(model: lmdsl.ScriptedModel, limit: int) -> None:
    compiled = GEPA(max_metric_calls=limit, seed=2, threads=2).compile(judge, TRAIN, explained, devset=VAL)
    runs = [r for r in model.requests if not reflecting(r)]
    spent = compiled.settings["spent"]
    assert spent["metric_calls"] == len(runs) <= limit
    assert spent["metric_calls"] > limit - len(VAL)  # it stops only when the next step cannot be paid for
    assert compiled.lm_calls == len(model.requests) == spent["lm_calls"]  # reflections counted as LM calls


@pytest.mark.parametrize("limit", [11, 20, 31])
def test_the_lm_call_budget_counts_reflections_and_is_never_passed(model: lmdsl.ScriptedModel, limit: int) -> None:
    compiled = GEPA(max_lm_calls=limit, seed=3, threads=3).compile(judge, TRAIN, explained, devset=VAL)
    assert len(model.requests) == compiled.lm_calls <= limit
    assert compiled.lm_calls >= limit - 1  # refused at the limit, not well before it


def test_the_token_budget_refuses_calls_once_spent(model: lmdsl.ScriptedModel) -> None:
    compiled = GEPA(max_total_tokens=60, seed=0, threads=1).compile(judge, TRAIN, explained, devset=VAL)
    largest = max(len(json.dumps(knows(r))) // 4 for r in model.requests)
    assert 60 <= compiled.tokens < 60 + largest  # one call under way when the limit was reached


def test_too_small_or_missing_budgets_are_refused_up_front() -> None:
    with pytest.raises(lmdsl.ConfigurationError, match="needs a budget: set max_metric_calls \\(at least 34"):
        GEPA().compile(judge, TRAIN, explained, devset=VAL)
    with pytest.raises(lmdsl.ConfigurationError, match="raise it to 34 or more"):
        GEPA(max_metric_calls=33).compile(judge, TRAIN, explained, devset=VAL)
    with pytest.raises(lmdsl.ConfigurationError, match="raise it to at least 11"):
        GEPA(max_lm_calls=10).compile(judge, TRAIN, explained, devset=VAL)
    assert GEPA(minibatch_size=2, demo_sets=3).minimum_metric_calls(8, 6) == 3 * 8 + 6 + 3 * 4 + 8

    @lmdsl.program
    def echo(text: str) -> str:
        return text

    with pytest.raises(lmdsl.ConfigurationError, match="calls no fuzzy function"):
        GEPA(max_metric_calls=40).compile(echo, TRAIN, plain, devset=VAL)


def test_the_reflection_prompt_never_exceeds_its_cap() -> None:
    long_data = [lmdsl.Example(text=f"{'word ' * 400}{t}", label=label) for t, label in LABELS.items()]

    def long_feedback(example: lmdsl.Example, prediction: str) -> lmdsl.Score:
        return lmdsl.Score(prediction == example.label, feedback="because " * 500)

    scripted = lmdsl.ScriptedModel(lambda r: {"instruction": "New."} if reflecting(r) else {"mood": "pos"})
    with lmdsl.using(model=scripted, cache=False):
        GEPA(max_metric_calls=40, max_reflection_chars=3000, threads=1).compile(
            judge, long_data[:6], long_feedback, devset=long_data
        )
    sizes = [sum(len(m.content) for m in r.messages) for r in scripted.requests if reflecting(r)]
    assert sizes and max(sizes) <= 3000 and min(sizes) > 2000  # cut to fit, not dropped wholesale


def test_failed_checks_and_parse_failures_reach_the_reflection() -> None:
    @lmdsl.fuzzy(retries=1)
    def checked(text: str) -> str:
        """Say pos or neg."""

    @checked.ensure
    def not_pos_for_grim(out: str, *, text: str) -> None:
        if text == "grim" and out == "pos":
            raise lmdsl.Retry("grim is never pos")

    @lmdsl.program
    def strict(text: str) -> str:
        return checked(text)

    def answers(request: Request) -> Any:
        if reflecting(request):
            return {"instruction": "Better."}
        word = request.messages[request.prefix_length].content.split(": ", 1)[1]
        return "not json at all" if word == "dull" else {"checked": "pos"}

    scripted = lmdsl.ScriptedModel(answers)
    grim_dull = [e for e in DATA if e.text in ("grim", "dull")]
    with lmdsl.using(model=scripted, cache=False):
        GEPA(max_metric_calls=30, minibatch_size=2, threads=1).compile(strict, grim_dull, plain, devset=DATA)
    prompts = [r.messages[-1].content for r in scripted.requests if reflecting(r)]
    assert prompts
    assert any("grim is never pos" in p for p in prompts)  # the check's reason
    assert any("not json at all" in p and "failed: the run: " in p for p in prompts)  # the unparsed reply


@lmdsl.fuzzy
def left(text: str) -> str:
    """Say pos or neg."""


@lmdsl.fuzzy
def right(text: str) -> str:
    """Say pos or neg."""


@lmdsl.program
def both(text: str) -> str:
    return f"{left(text)} {right(text)}"


def half(example: lmdsl.Example, prediction: str) -> lmdsl.Score:
    parts = prediction.split()
    wrong = [name for name, part in zip(("left", "right"), parts) if part != example.label]
    feedback = f"the answer for {example.text} is {example.label} ({' and '.join(wrong)} wrong)" if wrong else ""
    return lmdsl.Score(sum(part == str(example.label) for part in parts) / 2, feedback=feedback)


def two_answers(request: Request) -> Any:
    if reflecting(request):
        return reflector_adds_facts(request)
    word = request.messages[request.prefix_length].content.split(": ", 1)[1]
    found = re.search(rf"\b{re.escape(word)}=(\w+)", request.messages[0].content)
    key = "left" if '"left"' in (request.json_schema or "") else "right"
    return {key: found.group(1) if found else "pos"}


def test_component_all_reflects_on_every_function_each_iteration() -> None:
    scripted = lmdsl.ScriptedModel(two_answers)
    with lmdsl.using(model=scripted, cache=False):
        compiled = GEPA(max_metric_calls=50, component="all", threads=1).compile(both, TRAIN, half, devset=VAL)
    steps = [re.search(r"task_step: (\w+)", r.messages[-1].content) for r in scripted.requests if reflecting(r)]
    names = [step.group(1) for step in steps if step]
    assert names and names[::2] == ["left"] * len(names[::2]) and names[1::2] == ["right"] * len(names[1::2])
    assert compiled.settings["lineage"][-1]["origin"] == "reflection on left, right"


def test_merge_joins_two_lines_of_descent(tmp_path: Path) -> None:
    path = tmp_path / "both.gepa.json"

    def no_reflection(request: Request) -> Any:  # so that the only way up is the merge
        return {"instruction": "Say pos."} if reflecting(request) else two_answers(request)

    scripted = lmdsl.ScriptedModel(no_reflection)
    with lmdsl.using(model=scripted, cache=False):
        GEPA(max_metric_calls=34, max_lm_calls=2 * len(VAL), state_file=path).compile(both, TRAIN, half, devset=VAL)
        state = load_state_for(path, both)
        seed = state.members[0]
        # two lines of descent: #1 fixed `left` on bad/awful, #2 fixed `right` on grim/dull
        state.members += [
            Member({"left": "Say pos or neg. bad=neg. awful=neg.", "right": seed.instructions["right"]}, (0,),
                   tuple(0.5 if e.text in ("bad", "awful") else s for e, s in zip(VAL, seed.scores)), 1, "test"),
            Member({"left": seed.instructions["left"], "right": "Say pos or neg. grim=neg. dull=neg."}, (0,),
                   tuple(0.5 if e.text in ("grim", "dull") else s for e, s in zip(VAL, seed.scores)), 2, "test"),
        ]  # fmt: skip
        state.merges_due, state.iteration = 1, 2
        state.save(path)
        compiled = GEPA(max_metric_calls=60, merge=True, state_file=path, threads=1).compile(
            both, TRAIN, half, devset=VAL
        )
    chain = compiled.settings["lineage"]
    assert chain[-1]["origin"] == "merge of #1 and #2" and chain[-1]["parents"] == [1, 2]
    assert compiled.params["left"].instructions.endswith("awful=neg.")
    assert compiled.params["right"].instructions.endswith("dull=neg.")
    # each parent is half right on its two words (62.5); the merge on all four, as measured on validation
    assert compiled.score == 75.0 and [step["score"] for step in chain] == [50.0, 62.5, 75.0]


def load_state_for(path: Path, program: lmdsl.Program[..., Any]) -> State:
    data = json.loads(path.read_text())
    state = load_state(path, data["setup"], list(program.functions), len(VAL), len(TRAIN))
    assert state is not None
    return state


# -- the state file ------------------------------------------------------------------------


def test_a_finished_compile_resumed_spends_nothing_more(model: lmdsl.ScriptedModel, tmp_path: Path) -> None:
    path = tmp_path / "judge.gepa.json"
    first = GEPA(max_metric_calls=50, seed=4, state_file=path, threads=1).compile(judge, TRAIN, explained, devset=VAL)
    before = len(model.requests)
    again = GEPA(max_metric_calls=50, seed=4, state_file=path, threads=1).compile(judge, TRAIN, explained, devset=VAL)
    assert len(model.requests) == before  # the budget was spent by the first run, and the state says so
    assert again.params == first.params and again.settings["spent"]["metric_calls"] <= 50
    more = GEPA(max_metric_calls=80, seed=4, state_file=path, threads=1).compile(judge, TRAIN, explained, devset=VAL)
    assert len(model.requests) > before and more.settings["iterations"] > first.settings["iterations"]


def test_compile_program_keeps_the_state_beside_the_artifact_and_inspect_shows_the_lineage(
    model: lmdsl.ScriptedModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmdsl.cli.commands import main

    artifact = tmp_path / "judge.lmdsl.json"
    program = optimize(
        trainset=TRAIN, devset=VAL, metric=explained, artifact=artifact, optimizer=GEPA(max_metric_calls=50, seed=1)
    )(lmdsl.program(lambda text: mood(text)))
    compile_program(program)
    assert (tmp_path / "judge.lmdsl.json.gepa.json").exists()
    data = json.loads(artifact.read_text())
    assert data["optimizer"]["spent"]["metric_calls"] <= 50 and data["optimizer"]["lineage"][0]["origin"] == "seed"
    assert main(["inspect", str(artifact)]) == 0
    shown = capsys.readouterr().out
    assert "lineage of the chosen instructions" in shown and "#0 seed (iteration 0" in shown
    assert "reflection on mood" in shown


GOOD_STATE: dict[str, Path] = {}


@pytest.fixture
def state_file(model: lmdsl.ScriptedModel, tmp_path: Path) -> Path:
    path = tmp_path / "judge.gepa.json"
    GEPA(max_metric_calls=40, seed=5, state_file=path, threads=1).compile(judge, TRAIN, explained, devset=VAL)
    return path


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: {**d, "members": []},
        lambda d: {**d, "rng": [3, ["x"], None]},
        lambda d: {**d, "members": [{**d["members"][0], "scores": [2.0] * len(VAL)}]},
        lambda d: {**d, "fronts": [[7]] * len(VAL)},
        lambda d: {**d, "train_order": [99]},
        lambda d: "not an object",
        lambda d: {**d, "spent": [], "next_component": "x"},
        lambda d: {**d, "members": {"0": d["members"][0]}},
    ],
)
def test_a_corrupt_state_file_is_a_typed_error(state_file: Path, corrupt: Callable[[Any], Any]) -> None:
    state_file.write_text(json.dumps(corrupt(json.loads(state_file.read_text()))))
    with pytest.raises(lmdsl.ArtifactError, match="delete it"):
        GEPA(max_metric_calls=40, seed=5, state_file=state_file, threads=1).compile(judge, TRAIN, explained, devset=VAL)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_damage_to_a_state_file_loads_or_is_an_artifact_error(tmp_path_factory: Any, data: st.DataObject) -> None:
    path = tmp_path_factory.mktemp("state") / "s.gepa.json"
    state = State("abc", [member([1, 0, 0.5, 1, 0, 0, 0, 0])], {}, rng=random.Random(0).getstate(), spent={})
    text = state.to_json()
    at = data.draw(st.integers(0, len(text) - 1))
    junk = data.draw(st.text(max_size=5))
    path.write_text(text[:at] + junk + text[at + data.draw(st.integers(0, 5)) :])
    try:
        load_state(path, "abc", ["mood"], 8, 6)
    except lmdsl.ArtifactError:
        pass


# -- Score in evaluation rows and in every optimizer ------------------------------------------


def test_score_carries_feedback_into_evaluation_rows(model: lmdsl.ScriptedModel) -> None:
    result = lmdsl.evaluate(judge, VAL, explained, threads=1)
    wrong = [row for row in result.rows if row.score == 0.0]
    assert wrong and all(row.feedback == f"the answer for {row.inputs['text']} is neg" for row in wrong)
    assert all(row.feedback is None for row in result.rows if row.score == 1.0)
    assert result.rows[1].to_dict()["feedback"] == "the answer for bad is neg"


def test_a_metric_that_fails_on_every_example_stops_gepa_with_a_typed_error(model: lmdsl.ScriptedModel) -> None:
    def garbage(example: lmdsl.Example, prediction: str) -> Any:
        return {"score": "high"}

    with pytest.raises(lmdsl.ConfigurationError, match="the metric failed on every example .*returned"):
        GEPA(max_metric_calls=40).compile(judge, TRAIN, garbage, devset=VAL)


@settings(max_examples=30, deadline=None)
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-3, 3),
        st.booleans(),
        st.text(max_size=5),
        st.none(),
        st.tuples(st.floats(allow_nan=True), st.one_of(st.text(max_size=20), st.integers())),
    )
)
def test_whatever_a_metric_returns_a_row_has_a_score_in_range_or_an_error(value: Any) -> None:
    def metric(example: lmdsl.Example, prediction: str) -> Any:
        return lmdsl.Score(*value) if isinstance(value, tuple) else value

    with lmdsl.using(model=lmdsl.ScriptedModel(knows), cache=False):
        row = lmdsl.evaluate(judge, VAL[:1], metric, threads=1, progress=False).rows[0]
    assert 0.0 <= row.score <= 1.0
    valid = not isinstance(value, (str, type(None))) and (
        0 <= (value[0] if isinstance(value, tuple) else value) <= 1
        and (not isinstance(value, tuple) or isinstance(value[1], str))
    )
    assert (row.error is None) == valid
    if valid and isinstance(value, tuple) and value[1].strip():
        assert row.feedback == value[1].strip()


def test_score_values_are_checked_like_plain_metric_values() -> None:
    assert metric_score(lmdsl.Score(True, "fine")) == 1.0 and metric_feedback(lmdsl.Score(0.25, "x")) == "x"
    assert metric_feedback(0.5) == ""
    for bad in (float("nan"), 1.5, "high", None):
        with pytest.raises((TypeError, ValueError)):
            lmdsl.Score(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="feedback must be text"):
        lmdsl.Score(1.0, feedback=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [lambda: BootstrapFewShot(max_demos=2), lambda: RandomSearch(candidates=4, threads=1)],
)
def test_the_other_optimizers_read_a_score_metric_as_its_value(model: lmdsl.ScriptedModel, make: Any) -> None:
    with_score = make().compile(judge, TRAIN, explained, devset=VAL)
    with_bool = make().compile(judge, TRAIN, plain, devset=VAL)
    assert with_score.params == with_bool.params and with_score.score == with_bool.score


def test_mipro_reads_a_score_metric_as_its_value(model: lmdsl.ScriptedModel) -> None:
    pytest.importorskip("optuna")
    from lmdsl.compiler import MIPRO

    settings_ = {"trials": 3, "minibatch_size": 4, "instructions": 1, "demo_sets": 3, "threads": 1}
    with_score = MIPRO(**settings_).compile(judge, TRAIN, explained, devset=VAL)  # type: ignore[arg-type]
    with_bool = MIPRO(**settings_).compile(judge, TRAIN, plain, devset=VAL)  # type: ignore[arg-type]
    assert with_score.score == with_bool.score and with_score.params == with_bool.params
