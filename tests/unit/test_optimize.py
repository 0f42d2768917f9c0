"""Optimizers, artifacts and @optimize on a scripted model that gets better with demos."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

import lmdsl
from lmdsl.compiler import BootstrapFewShot, LabeledFewShot, RandomSearch, compile_program, optimize
from lmdsl.compiler.artifact import write_artifact
from lmdsl.data import Example
from lmdsl.lm.types import Request
from lmdsl.program import StaleArtifactWarning

# The program's label field names no fuzzy function's output (the labels are the final answer
# only), so the labelled candidate warns that it has no demos; these tests are about the other
# candidates (tests/unit/test_compile_reports.py checks the warning itself).
pytestmark = pytest.mark.filterwarnings("ignore::lmdsl.UnusedLabelsWarning")

WORDS = {
    "great": "positive",
    "loved": "positive",
    "fine": "positive",
    "awful": "negative",
    "boring": "negative",
    "hated": "negative",
}


@lmdsl.fuzzy
def clean(text: str) -> str:
    """Lower-case the text and drop punctuation."""


@lmdsl.fuzzy
def sentiment(text: str) -> Literal["positive", "negative"]:
    """Classify the sentiment."""


@lmdsl.program
def classify(text: str) -> str:
    return sentiment(clean(text))


def demo_count(request: Request) -> int:
    return sum(1 for m in request.messages[: request.prefix_length] if m.role == "assistant")


def respond(request: Request) -> dict[str, Any]:
    """A model that cleans text perfectly, and classifies well only once it has seen 2+ demos."""
    text = request.messages[request.prefix_length].content.split(": ", 1)[1]
    if '"clean"' in (request.json_schema or ""):
        return {"clean": "".join(c for c in text.lower() if c.isalpha() or c == " ")}
    if demo_count(request) < 2:
        return {"sentiment": "positive"}
    label = next((v for k, v in WORDS.items() if k in text), "positive")
    return {"sentiment": label}


def examples(*pairs: tuple[str, str]) -> list[Example]:
    return [Example(text=text, label=label) for text, label in pairs]


TRAIN = examples(
    ("Great film!", "positive"),
    ("Awful plot.", "negative"),
    ("Loved it.", "positive"),
    ("So boring...", "negative"),
    ("Fine acting.", "positive"),
    ("Hated it!", "negative"),
)
DEV = examples(
    ("GREAT!", "positive"),
    ("awful", "negative"),
    ("boring, boring", "negative"),
    ("loved the music", "positive"),
    ("hated the end", "negative"),
    ("fine", "positive"),
)


def exact(example: Example, prediction: str) -> bool:
    return bool(prediction == example.label)


@pytest.fixture(autouse=True)
def _model() -> Any:
    with lmdsl.using(model=lmdsl.ScriptedModel(respond)):
        yield
    for fn in (clean, sentiment):
        fn.reset_params()


def test_labelled_few_shot_takes_demos_from_the_training_set() -> None:
    named = [example.with_fields(sentiment=example.label) for example in TRAIN]
    compiled = LabeledFewShot(k=3, seed=None).compile(classify, named, exact)
    demos = compiled.params["sentiment"].demos
    assert [(d.inputs["text"], d.output) for d in demos] == [
        ("Great film!", "positive"),
        ("Awful plot.", "negative"),
        ("Loved it.", "positive"),
    ]
    assert compiled.params["clean"].demos == ()  # no label named for clean's output
    assert compiled.lm_calls == 0


def test_in_a_one_function_program_the_only_label_is_its_output() -> None:
    @lmdsl.program
    def direct(text: str) -> str:
        return sentiment(text)

    compiled = LabeledFewShot(k=2, seed=None).compile(direct, TRAIN, exact)
    assert [d.output for d in compiled.params["sentiment"].demos] == ["positive", "negative"]


def test_bootstrap_gives_every_step_demos_from_successful_traces() -> None:
    compiled = BootstrapFewShot(max_demos=2, max_labeled=3).compile(classify, TRAIN, exact)
    clean_demos = compiled.params["clean"].demos
    sentiment_demos = compiled.params["sentiment"].demos
    assert len(clean_demos) == 2 and clean_demos[0].output == "great film"
    assert sentiment_demos[0].inputs == {"text": "great film"}  # an intermediate step's real input
    # "Awful plot." failed the metric (zero-shot, the model says positive), so it gave no demo
    assert [d.inputs["text"] for d in sentiment_demos] == ["great film", "loved it"]
    assert compiled.lm_calls > 0
    assert sentiment.params.demos == ()  # the program's parameters are left as they were


def test_bootstrap_tops_up_with_labelled_demos_and_uses_them_as_teacher() -> None:
    named = [example.with_fields(sentiment=example.label) for example in TRAIN]
    compiled = BootstrapFewShot(max_demos=2, max_labeled=3).compile(classify, named, exact)
    demos = compiled.params["sentiment"].demos
    # with labelled demos in the teacher's prompt the model is right, so the first two pass
    assert [d.inputs["text"] for d in demos[:2]] == ["great film", "awful plot"]
    assert len(demos) == 3 and demos[2].inputs["text"] not in ("Great film!", "Awful plot.")


def test_random_search_is_deterministic_and_beats_zero_shot() -> None:
    first = RandomSearch(candidates=5, max_demos=3, seed=7, threads=2).compile(classify, TRAIN, exact, devset=DEV)
    second = RandomSearch(candidates=5, max_demos=3, seed=7, threads=2).compile(classify, TRAIN, exact, devset=DEV)
    assert first.baseline == pytest.approx(50.0)
    assert first.score == pytest.approx(100.0)
    assert [c.score for c in first.candidates] == [c.score for c in second.candidates]
    assert first.params == second.params
    assert len(first.candidates) == 5 and first.candidates[0].label == "zero-shot"


def test_random_search_stops_at_its_budget() -> None:
    # cache off, so every call counts and the spending is the same whatever ran before; 20 calls
    # end the search while the bootstrapped candidate is scored: the program as given, and a warning
    with lmdsl.using(cache=False), pytest.warns(lmdsl.BudgetWarning, match="after 3 of 8 candidates"):
        compiled = RandomSearch(candidates=8, max_lm_calls=20, threads=1).compile(classify, TRAIN, exact, devset=DEV)
    assert len(compiled.candidates) < 8
    assert 20 <= compiled.lm_calls <= 20 + 1  # no example starts once the budget is spent; a run is 2 calls
    cut = compiled.candidates[-1]
    assert cut.score is None and cut.label.endswith("(the budget ran out during its evaluation)")


def test_a_budget_that_ends_the_search_before_anything_beats_zero_shot_says_so() -> None:
    cut = RandomSearch(candidates=8, max_lm_calls=1, threads=1)
    with (
        lmdsl.using(cache=False),
        pytest.warns(
            lmdsl.BudgetWarning,
            match=r"^classify: RandomSearch's budget ran out \(2 of 1 LM calls\) after 1 of 8 candidates, so",
        ) as said,
    ):
        compiled = cut.compile(classify, TRAIN, exact, devset=DEV)
    assert [c.label for c in compiled.candidates] == ["zero-shot (the budget ran out during its evaluation)"]
    assert compiled.params == classify.params and compiled.baseline is None
    assert compiled.lm_calls == 2  # the one run that started: clean, then sentiment
    assert said[0].filename == __file__  # the user's line, not lmdsl's
    with lmdsl.using(cache=False), warnings.catch_warnings():  # a search that ran its course, or found better
        warnings.simplefilter("error", lmdsl.BudgetWarning)
        RandomSearch(candidates=3, threads=1).compile(classify, TRAIN, exact, devset=DEV)
        found = RandomSearch(candidates=8, max_lm_calls=40, threads=1).compile(classify, TRAIN, exact, devset=DEV)
    assert found.score == 100.0 and found.candidates[-1].score is None  # better found, then cut


@optimize(trainset=TRAIN, devset=DEV, metric=exact, optimizer=RandomSearch(candidates=4, seed=1))
@lmdsl.program
def decorated(text: str) -> str:
    return sentiment(clean(text))


def test_compile_writes_an_artifact_that_the_program_loads(tmp_path: Path) -> None:
    path = tmp_path / "decorated.lmdsl.json"
    compiled = compile_program(decorated, write=False)
    write_artifact(path, decorated, compiled, model="scripted")
    data = json.loads(path.read_text())
    assert data["format"] == "lmdsl-params/1" and data["model"] == "scripted"
    assert data["scores"] == {"uncompiled": pytest.approx(50.0), "compiled": pytest.approx(100.0)}
    assert data["optimizer"]["optimizer"] == "RandomSearch" and data["optimizer"]["seed"] == 1
    assert len(data["functions"]["sentiment"]["demos"]) >= 2
    decorated.use_artifact(path)
    assert decorated("awful") == "negative"  # loaded before the first run: compiled behaviour
    assert len(sentiment.params.demos) >= 2


def test_a_stale_artifact_warns_and_runs_uncompiled(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    compiled = compile_program(decorated, write=False)
    write_artifact(path, decorated, compiled, model="scripted")
    data = json.loads(path.read_text())
    data["functions"]["sentiment"]["signature"] = "f" * 16
    path.write_text(json.dumps(data))
    decorated.use_artifact(path)
    with pytest.warns(StaleArtifactWarning, match="'sentiment' changed since the file was written"):
        assert decorated("awful") == "positive"  # uncompiled
    decorated.use_artifact(path, on_stale="raise")
    with pytest.raises(lmdsl.ArtifactError, match="changed since"):
        decorated("awful")


def test_a_missing_artifact_runs_uncompiled_silently(tmp_path: Path) -> None:
    decorated.use_artifact(tmp_path / "missing.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decorated("awful") == "positive"


def test_optimize_must_decorate_a_program() -> None:
    with pytest.raises(TypeError, match="put it above @lmdsl.program"):
        optimize(trainset=TRAIN, metric=exact)(sentiment)  # type: ignore[arg-type]


def respond_with_proposals(request: Request) -> dict[str, Any]:
    schema = request.json_schema or ""
    if '"summarize_data"' in schema:
        return {"summarize_data": "Short reviews labelled positive or negative."}
    if '"instruction"' in schema:
        return {"instruction": f"Label the review's sentiment (proposal {request.rollout})."}
    return respond(request)


def test_mipro_searches_instructions_and_demos_deterministically() -> None:
    from lmdsl.compiler import MIPRO

    with lmdsl.using(model=lmdsl.ScriptedModel(respond_with_proposals)):
        first = MIPRO(
            trials=6, minibatch_size=4, full_eval_every=3, instructions=3, demo_sets=4, seed=3, threads=2
        ).compile(classify, TRAIN, exact, devset=DEV)
        second = MIPRO(
            trials=6, minibatch_size=4, full_eval_every=3, instructions=3, demo_sets=4, seed=3, threads=2
        ).compile(classify, TRAIN, exact, devset=DEV)
    assert first.baseline == pytest.approx(50.0)
    assert first.score == pytest.approx(100.0)
    assert len(first.params["sentiment"].demos) >= 2
    assert first.params == second.params and first.score == second.score
    assert first.settings["optimizer"] == "MIPRO"


def test_mipro_resumes_a_study_from_its_storage(tmp_path: Path) -> None:
    import optuna

    from lmdsl.compiler import MIPRO

    storage = f"sqlite:///{tmp_path / 'study.sqlite3'}"
    options: dict[str, Any] = dict(
        minibatch_size=3, full_eval_every=2, instructions=2, demo_sets=3, seed=5, storage=storage, study_name="s"
    )
    with lmdsl.using(model=lmdsl.ScriptedModel(respond_with_proposals)):
        MIPRO(trials=3, **options).compile(classify, TRAIN, exact, devset=DEV)
        assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
        resumed = MIPRO(trials=5, **options).compile(classify, TRAIN, exact, devset=DEV)
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 5  # two more, not five more
    assert any(key.startswith("full:") for key in study.user_attrs)
    assert resumed.score is not None


def test_compile_program_keeps_a_resumable_study_beside_the_artifact(tmp_path: Path) -> None:
    from lmdsl.compiler import MIPRO

    @optimize(
        trainset=TRAIN,
        devset=DEV,
        metric=exact,
        artifact=tmp_path / "p.json",
        optimizer=MIPRO(trials=2, instructions=1, demo_sets=3, minibatch_size=6),
    )
    @lmdsl.program
    def resumable(text: str) -> str:
        return sentiment(clean(text))

    compile_program(resumable)
    assert (tmp_path / "p.json").exists() and (tmp_path / "p.json.optuna.sqlite3").exists()


def proposing(word: str, calls: list[str]) -> Callable[[Request], dict[str, Any]]:
    """`respond_with_proposals`, but proposals say `word`; each proposal request is logged in `calls`."""

    def reply(request: Request) -> dict[str, Any]:
        if '"instruction"' in (request.json_schema or ""):
            calls.append(word)
            return {"instruction": f"{word}: label the review's sentiment ({request.rollout})."}
        return respond_with_proposals(request)

    return reply


def instructions_of(compiled: Any) -> set[str]:
    return {c.params["sentiment"].instructions for c in compiled.candidates} | {
        compiled.params["sentiment"].instructions
    }


def test_a_resumed_study_reuses_its_candidates_instead_of_proposing_again(tmp_path: Path) -> None:
    from lmdsl.compiler import MIPRO

    storage = f"sqlite:///{tmp_path / 'study.sqlite3'}"
    options: dict[str, Any] = dict(
        minibatch_size=3, full_eval_every=2, instructions=3, demo_sets=3, seed=5, storage=storage
    )
    first_calls: list[str] = []
    with lmdsl.using(model=lmdsl.ScriptedModel(proposing("Alpha", first_calls))):
        first = MIPRO(trials=2, **options).compile(classify, TRAIN, exact, devset=DEV)
    assert first_calls == ["Alpha"] * 4  # two proposals for each of the two functions
    # a proposer that now says something else (a hosted model at temperature 1 would) is never asked
    later_calls: list[str] = []
    with lmdsl.using(model=lmdsl.ScriptedModel(proposing("Beta", later_calls))):
        resumed = MIPRO(trials=6, **options).compile(classify, TRAIN, exact, devset=DEV)
    assert later_calls == []
    assert not any(text.startswith("Beta") for text in instructions_of(resumed))
    assert resumed.lm_calls < first.lm_calls + 4 * len(DEV)  # no bootstrapping, no baseline again
    assert resumed.baseline == first.baseline


def test_workers_that_start_together_end_up_searching_one_set_of_candidates(tmp_path: Path) -> None:
    import optuna

    from lmdsl.compiler import MIPRO

    options: dict[str, Any] = dict(
        minibatch_size=3, full_eval_every=2, instructions=2, demo_sets=3, seed=5, study_name="shared"
    )
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    with lmdsl.using(model=lmdsl.ScriptedModel(proposing("Beta", []))):
        MIPRO(trials=1, storage=other, **options).compile(classify, TRAIN, exact, devset=DEV)
    theirs = optuna.load_study(study_name="shared", storage=other).user_attrs["candidates"]

    storage = f"sqlite:///{tmp_path / 'study.sqlite3'}"
    ours: list[str] = []

    def another_worker_stores_first(request: Request) -> dict[str, Any]:
        if '"instruction"' in (request.json_schema or "") and not ours:
            # while this worker proposes, one that started at the same moment stores its candidates
            optuna.load_study(study_name="shared", storage=storage).set_user_attr("candidates", theirs)
        return proposing("Alpha", ours)(request)

    with lmdsl.using(model=lmdsl.ScriptedModel(another_worker_stores_first)):
        compiled = MIPRO(trials=4, storage=storage, **options).compile(classify, TRAIN, exact, devset=DEV)
    assert ours  # this worker did propose its own ...
    assert all(
        text.startswith(("Beta", "Classify")) for text in instructions_of(compiled)
    )  # ... and searched the stored ones
    study = optuna.load_study(study_name="shared", storage=storage)
    assert study.user_attrs["candidates"] == theirs
    digests = {t.user_attrs["candidates"] for t in study.trials}
    assert len(digests) == 1 and all(
        t.user_attrs["worker"].endswith(f":{__import__('os').getpid()}") for t in study.trials
    )


def test_a_named_study_started_for_other_data_is_refused(tmp_path: Path) -> None:
    from lmdsl.compiler import MIPRO

    optimizer = MIPRO(
        trials=1,
        instructions=1,
        demo_sets=2,
        minibatch_size=6,
        storage=f"sqlite:///{tmp_path / 's.sqlite3'}",
        study_name="s",
    )
    optimizer.compile(classify, TRAIN, exact, devset=DEV)
    optimizer.compile(classify, TRAIN, exact, devset=DEV)  # the same setup resumes
    with pytest.raises(lmdsl.ConfigurationError, match="another version of classify"):
        optimizer.compile(classify, TRAIN[:4], exact, devset=DEV)


def test_a_changed_program_compiles_into_a_new_study_beside_the_artifact(tmp_path: Path) -> None:
    import optuna

    from lmdsl.compiler import MIPRO

    @lmdsl.fuzzy
    def short(text: str) -> Literal["positive", "negative"]:
        """Classify the sentiment."""

    @lmdsl.fuzzy
    def longer(text: str) -> Literal["positive", "negative"]:
        """Classify the sentiment of a movie review."""

    def build(labeller: lmdsl.FuzzyFunction[[str], Literal["positive", "negative"]]) -> lmdsl.Program[[str], str]:
        @optimize(
            trainset=TRAIN,
            devset=DEV,
            metric=exact,
            artifact=tmp_path / "p.json",
            optimizer=MIPRO(trials=1, instructions=1, demo_sets=2, minibatch_size=6),
        )
        @lmdsl.program
        def labelled(text: str) -> str:
            return labeller(text)

        return labelled

    with lmdsl.using(
        model=lmdsl.ScriptedModel(lambda r: {"short" if '"short"' in (r.json_schema or "") else "longer": "positive"})
    ):
        compile_program(build(short))
        compile_program(build(longer))
    storage = f"sqlite:///{tmp_path / 'p.json.optuna.sqlite3'}"
    names = optuna.get_all_study_names(storage)
    assert len(names) == 2 and all(name.rpartition("-")[0].endswith("labelled") for name in names)


def test_unreadable_candidates_in_a_study_are_an_artifact_error(tmp_path: Path) -> None:
    import optuna

    from lmdsl.compiler import MIPRO

    storage = f"sqlite:///{tmp_path / 's.sqlite3'}"
    optimizer = MIPRO(trials=1, instructions=1, demo_sets=2, minibatch_size=6, storage=storage, study_name="s")
    optimizer.compile(classify, TRAIN, exact, devset=DEV)
    study = optuna.load_study(study_name="s", storage=storage)
    stored = json.loads(study.user_attrs["candidates"])
    stored["demo_sets"][1]["sentiment"] = [{"inputs": {"text": "x"}, "output": "neutral", "reasoning": None}]
    study.set_user_attr("candidates", json.dumps(stored))
    with pytest.raises(lmdsl.ArtifactError, match="unreadable MIPRO candidates.*sentiment"):
        optimizer.compile(classify, TRAIN, exact, devset=DEV)
    study.set_user_attr("candidates", "{not json")
    with pytest.raises(lmdsl.ArtifactError, match="delete the study"):
        optimizer.compile(classify, TRAIN, exact, devset=DEV)


@pytest.mark.parametrize("optimizer", ["random search", "mipro"])
def test_a_token_budget_stops_the_search(optimizer: str) -> None:
    from lmdsl.compiler import MIPRO

    unbounded = (
        RandomSearch(candidates=8, threads=1)
        if optimizer == "random search"
        else MIPRO(trials=8, instructions=1, minibatch_size=3, threads=1)
    ).compile(classify, TRAIN, exact, devset=DEV)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        bounded = (
            RandomSearch(candidates=8, threads=1, max_total_tokens=unbounded.tokens // 3)
            if optimizer == "random search"
            else MIPRO(trials=8, instructions=1, minibatch_size=3, threads=1, max_total_tokens=unbounded.tokens // 3)
        ).compile(classify, TRAIN, exact, devset=DEV)
    ended = [str(w.message) for w in said if issubclass(w.category, lmdsl.BudgetWarning)]
    # a third of the tokens: MIPRO's demo sets and baseline spend it before any trial is scored in
    # full; random search's scoring of the bootstrapped candidate is cut short by it
    assert len(ended) == 1 and f"of {unbounded.tokens // 3:,} tokens)" in ended[0]
    assert bounded.tokens < unbounded.tokens
    assert bounded.settings["max_total_tokens"] == unbounded.tokens // 3


def test_a_storage_url_for_an_optimizer_without_a_study_is_refused(tmp_path: Path) -> None:
    with pytest.raises(lmdsl.ConfigurationError, match="RandomSearch keeps no study"):
        compile_program(decorated, storage=f"sqlite:///{tmp_path / 's.sqlite3'}")


@pytest.mark.parametrize(
    ("value", "threshold", "passes"),
    [
        (True, None, True),
        (False, None, False),
        (1.0, None, True),
        (0.999, None, False),
        (0.5, 0.5, True),
        (0.4999, 0.5, False),
        (0.0, 0.0, True),
        (1, 1.0, True),
    ],
)
def test_a_run_passes_the_bootstrap_metric_at_one_or_at_the_threshold_exactly(
    value: float | bool, threshold: float | None, passes: bool
) -> None:
    from lmdsl.compiler.few_shot import metric_passes

    example = Example(text="x", label="y")
    assert metric_passes(lambda example, prediction: value, example, "y", (), threshold) is passes


def test_bootstrap_keeps_runs_that_reach_the_threshold_and_stops_at_max_demos() -> None:
    scores = {"Great film!": 0.5, "Awful plot.": 0.4, "Loved it.": 0.5, "So boring...": 0.9, "Fine acting.": 1.0}

    def graded(example: Example, prediction: str) -> float:
        return scores.get(example.text, 0.0)

    kept = BootstrapFewShot(max_demos=3, max_labeled=0, threshold=0.5).compile(classify, TRAIN, graded)
    texts = [d.inputs["text"] for d in kept.params["clean"].demos]
    assert texts == ["Great film!", "Loved it.", "So boring..."]  # 0.4 fell short; the budget of 3 is met exactly


@pytest.mark.parametrize("max_demos", [1, 2])
def test_random_search_draws_demo_set_sizes_within_max_demos(max_demos: int) -> None:
    compiled = RandomSearch(candidates=8, max_demos=max_demos, max_labeled=0, seed=3, threads=1).compile(
        classify, TRAIN, exact, devset=DEV
    )
    sizes = [c.label.split(", ")[-1] for c in compiled.candidates if "shuffled" in c.label]
    assert len(sizes) == 5
    assert {int(size.split()[0]) for size in sizes} <= set(range(1, max_demos + 1))
    assert max(int(size.split()[0]) for size in sizes) == max_demos  # the top of the range is drawn too (seeded)
