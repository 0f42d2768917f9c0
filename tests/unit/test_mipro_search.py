"""MIPRO on scripted models: the `Compiled` record, what the proposer is shown, the candidates and
setup kept in the Optuna study, the minibatches, the full evaluations and how a study resumes.

Labels are upper case ("POS"), the model answers in lower case ("pos") and the metric ignores
case, so a demo's output tells a labelled demo from a bootstrapped one."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any, cast

import pytest

import lmdsl
from lmdsl.compiler import MIPRO, RandomSearch
from lmdsl.compiler.base import Candidate, Compiled
from lmdsl.lm.types import Request
from tests.unit.test_few_shot_optimizers import DEV, asked, demo_count

optuna = pytest.importorskip("optuna", reason="MIPRO needs optuna")


@lmdsl.fuzzy
def mood(text: str) -> str:
    """Say pos or neg."""


@lmdsl.program
def judge(text: str) -> str:
    return mood(text)


DOCSTRING = "Say pos or neg."
LABELS = {"good": "POS", "bad": "NEG", "nice": "POS", "awful": "NEG", "café": "POS", "grim": "NEG"}
TRAIN = [lmdsl.Example(text=text, label=label) for text, label in LABELS.items()]
ANSWERS = {**{text: label.lower() for text, label in LABELS.items()}, **{e.text: e.label.lower() for e in DEV}}
SOURCE = '@lmdsl.program\ndef judge(text: str) -> str:\n    return mood(text)\n\n@lmdsl.fuzzy\ndef mood(text: str) -> str:\n    """Say pos or neg."""\n'


def exact(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction.upper() == example.label)


def kind(request: Request) -> str:
    schema = request.json_schema or ""
    return "summarize" if '"summarize_data"' in schema else "propose" if '"instruction"' in schema else "run"


def classifier(request: Request) -> dict[str, Any]:
    """Right with two demos or more, or when told "Proposal 1."; otherwise it says "pos"."""
    right = demo_count(request) >= 2 or request.messages[0].content.startswith("Proposal 1.")
    return {"mood": ANSWERS[asked(request)] if right else "pos"}


def one_proposal(request: Request) -> dict[str, Any]:
    """`classifier`, with a summary of the data and the proposal "Proposal 1." for the proposer."""
    if kind(request) == "summarize":
        return {"summarize_data": "Short reviews."}
    if kind(request) == "propose":
        return {"instruction": "Proposal 1."}
    return classifier(request)


def demos(instructions: str, *pairs: tuple[str, str]) -> dict[str, lmdsl.Params]:
    return {"mood": lmdsl.Params(instructions, tuple(lmdsl.Demo({"text": text}, output) for text, output in pairs))}


def dumped(*pairs: tuple[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {"mood": [{"inputs": {"text": text}, "output": output, "reasoning": None} for text, output in pairs]}


def sqlite(folder: Path, name: str = "study") -> str:
    return f"sqlite:///{folder / (name + '.sqlite3')}"


def timed(run: Callable[[], Compiled]) -> tuple[Compiled, float]:
    before = time.perf_counter()
    compiled = run()
    return compiled, time.perf_counter() - before


def compiler_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "lmdsl.compiler"]


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    mood.reset_params()


class Studies:
    """The in-memory studies MIPRO creates (no storage: fast), kept for the test to read.
    `shared` hands the first back to later compiles, as a database would; `prepare` runs on
    each new one before MIPRO reads it, as another worker could have written to it."""

    def __init__(self) -> None:
        self.made: list[Any] = []
        self.shared = False
        self.prepare: Callable[[Any], None] = lambda study: None

    def create(self, real: Callable[..., Any], options: dict[str, Any]) -> Any:
        if self.shared and self.made:
            self.made[0].sampler = options["sampler"]  # as loading it from a database would: this compile's sampler
            return self.made[0]
        study = real(**options)
        self.prepare(study)
        self.made.append(study)
        return study


@pytest.fixture
def studies(monkeypatch: pytest.MonkeyPatch) -> Studies:
    kept = Studies()
    real = optuna.create_study
    monkeypatch.setattr(optuna, "create_study", lambda **options: kept.create(real, options))
    return kept


def test_mipro_returns_its_record_and_keeps_its_candidates_in_the_study(
    studies: Studies, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    shown: list[tuple[str, float, int, str]] = []
    threads: set[str] = set()

    def reply(request: Request) -> dict[str, Any]:
        threads.add(threading.current_thread().name)
        if kind(request) == "summarize":
            shown.append(("summarize", request.temperature, request.rollout, request.messages[-1].content))
            return {"summarize_data": "Short reviews."}
        if kind(request) == "propose":
            shown.append(("propose", request.temperature, request.rollout, request.messages[-1].content))
            return {"instruction": f"  Proposal {request.rollout}.  "}
        return classifier(request)

    optimizer = MIPRO(
        trials=4,
        minibatch_size=10,
        full_eval_every=3,
        instructions=3,
        demo_sets=5,
        max_demos=2,
        max_labeled=3,
        seed=3,
        threads=1,
        study_name="main",
    )
    caplog.set_level(logging.INFO, logger="lmdsl.compiler")
    with lmdsl.using(model=lmdsl.ScriptedModel(reply, name="scripted-mipro")):
        compiled, elapsed = timed(lambda: optimizer.compile(judge, TRAIN, exact, devset=DEV))

    # what the proposer saw: the training data, then for each proposal the program's code, the
    # summary, the step, its instruction, three demos of the first bootstrapped set and a tip
    good_examples = (
        '["{\\"text\\": \\"good\\"} -> {\\"mood\\": \\"pos\\"}","{\\"text\\": \\"bad\\"} -> {\\"mood\\": \\"neg\\"}",'
        '"{\\"text\\": \\"grim\\"} -> {\\"mood\\": \\"NEG\\"}"]'
    )
    assert shown == [
        (
            "summarize",
            0.0,
            0,
            'examples: ["{\\"text\\": \\"good\\", \\"label\\": \\"POS\\"}","{\\"text\\": \\"bad\\", \\"label\\": \\"NEG\\"}",'
            '"{\\"text\\": \\"nice\\", \\"label\\": \\"POS\\"}","{\\"text\\": \\"awful\\", \\"label\\": \\"NEG\\"}",'
            '"{\\"text\\": \\"café\\", \\"label\\": \\"POS\\"}","{\\"text\\": \\"grim\\", \\"label\\": \\"NEG\\"}"]',
        ),
        (
            "propose",
            1.0,
            1,
            f'program_code: {SOURCE}\ndata_summary: Short reviews.\nstep: mood(text) -> {{"mood": string}}\n'
            f"current_instruction: Say pos or neg.\ngood_examples: {good_examples}\n"
            'tip: Give the model a persona suited to the task (for example "You are a ...").',
        ),
        (
            "propose",
            1.0,
            2,
            f'program_code: {SOURCE}\ndata_summary: Short reviews.\nstep: mood(text) -> {{"mood": string}}\n'
            f"current_instruction: Say pos or neg.\ngood_examples: {good_examples}\ntip: ",  # the tip "none"
        ),
    ]

    [study] = studies.made
    assert study.study_name == "main"
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    stored = study.user_attrs["candidates"]
    assert stored.startswith('{"demo_sets": [')  # sorted keys
    assert json.loads(stored) == {
        "instructions": {"mood": [DOCSTRING, "Proposal 1.", "Proposal 2."]},
        "demo_sets": [
            dumped(),
            dumped(("good", "POS"), ("nice", "POS"), ("awful", "NEG")),  # labelled, drawn with the seed
            dumped(("good", "pos"), ("bad", "neg"), ("grim", "NEG")),  # bootstrapped in training order, topped up
            dumped(("bad", "neg"), ("good", "POS"), ("awful", "NEG")),  # shuffled, 1 demo wanted
            dumped(("good", "pos"), ("bad", "NEG"), ("awful", "NEG")),  # shuffled, 1 demo wanted
        ],
    }
    assert study.user_attrs["setup"] == "ac3314dcab805cf8"  # the digest of the program, data, model and settings
    full = [(key, value) for key, value in study.user_attrs.items() if key.startswith("full:")]
    assert full == [
        ('full:4b74b3e12f8c62e5:{"mood": [0, 0]}', 75.0),
        ('full:4b74b3e12f8c62e5:{"mood": [2, 4]}', 100.0),  # of equal means, the larger key first
        ('full:4b74b3e12f8c62e5:{"mood": [0, 1]}', 100.0),
    ]
    assert [(t.params, t.value, t.user_attrs["candidates"]) for t in study.trials] == [
        ({"mood:instruction": 0, "mood:demos": 1}, 100.0, "4b74b3e12f8c62e5"),
        ({"mood:instruction": 2, "mood:demos": 4}, 100.0, "4b74b3e12f8c62e5"),
        ({"mood:instruction": 2, "mood:demos": 4}, 100.0, "4b74b3e12f8c62e5"),
        ({"mood:instruction": 2, "mood:demos": 4}, 100.0, "4b74b3e12f8c62e5"),
    ]

    best = demos("Proposal 2.", ("good", "pos"), ("bad", "NEG"), ("awful", "NEG"))
    assert compiled.candidates == (  # in the order they were scored on the whole dev set
        Candidate("zero-shot, docstrings", demos(DOCSTRING), 75.0),
        Candidate('trial combination {"mood": [2, 4]}', best, 100.0),
        Candidate(
            'trial combination {"mood": [0, 1]}',
            demos(DOCSTRING, ("good", "POS"), ("nice", "POS"), ("awful", "NEG")),
            100.0,
        ),
    )
    assert compiled.params == best  # the first of the best
    assert (compiled.score, compiled.baseline) == (100.0, 75.0)  # the baseline is zero-shot on the dev set
    assert (compiled.lm_calls, compiled.tokens) == (33, 115)  # the demo-set ladder reuses 2 bootstrap runs
    assert isinstance(compiled.seconds, float) and 0.0 <= compiled.seconds <= elapsed
    assert compiled.settings == {
        "optimizer": "MIPRO",
        "trials": 4,
        "minibatch_size": 10,
        "full_eval_every": 3,
        "instructions": 3,
        "demo_sets": 5,
        "max_demos": 2,
        "max_labeled": 3,
        "proposer": None,
        "max_lm_calls": None,
        "max_total_tokens": None,
        "threads": 1,
        "seed": 3,
        "storage": None,
        "study_name": "main",
    }
    assert compiler_log(caplog) == [
        "5 demo sets per function, 2 LM calls so far",
        "instruction candidates: {'mood': 3}",
        "trial 1/4: 100.0 on 4 examples, 13 LM calls so far",
        "trial 2/4: 100.0 on 4 examples, 17 LM calls so far",
        "trial 3/4: 100.0 on 4 examples, 21 LM calls so far",
        "full evaluation of the best combination so far: 100.0",  # every third trial, unless it is the last
        "trial 4/4: 100.0 on 4 examples, 29 LM calls so far",
        "full evaluation of the best combination so far: 100.0",  # and once at the end
    ]
    assert threads == {threading.main_thread().name}  # threads=1: every evaluation ran in this thread
    out, err = capsys.readouterr()
    # no progress display: neither the bar ("evaluate judge ...") nor the plain lines ("evaluate: 4/4, ...")
    assert out == "" and "evaluate judge" not in err and "evaluate: " not in err


def test_mipro_searches_the_demo_sets_random_search_tries(studies: Studies) -> None:
    """One candidate ladder: with the same seed and limits, MIPRO's demo sets are the demos of
    RandomSearch's candidates (Random(3) draws 1 demo for each shuffled rung)."""
    with lmdsl.using(model=lmdsl.ScriptedModel(classifier)):
        searched = RandomSearch(candidates=5, max_demos=2, max_labeled=3, seed=3, threads=1).compile(
            judge, TRAIN, exact, devset=DEV
        )
        MIPRO(trials=0, instructions=1, demo_sets=5, max_demos=2, max_labeled=3, seed=3, threads=1).compile(
            judge, TRAIN, exact, devset=DEV
        )
    ladder = [
        (),
        (("good", "POS"), ("nice", "POS"), ("awful", "NEG")),
        (("good", "pos"), ("bad", "neg"), ("grim", "NEG")),
        (("bad", "neg"), ("good", "POS"), ("awful", "NEG")),
        (("good", "pos"), ("bad", "NEG"), ("awful", "NEG")),
    ]
    assert json.loads(studies.made[0].user_attrs["candidates"])["demo_sets"] == [dumped(*pairs) for pairs in ladder]
    assert [c.params for c in searched.candidates] == [demos(DOCSTRING, *pairs) for pairs in ladder]
    assert [c.label for c in searched.candidates][3:] == [
        "bootstrapped, shuffled #1, 1 demos",
        "bootstrapped, shuffled #2, 1 demos",
    ]


def test_mipros_zero_shot_demo_set_is_empty_even_when_the_program_holds_demos(studies: Studies) -> None:
    mood.params = lmdsl.Params(DOCSTRING, (lmdsl.Demo({"text": "given"}, "POS"),))  # reset after the test
    with lmdsl.using(model=lmdsl.ScriptedModel(classifier)):
        MIPRO(trials=0, instructions=1, demo_sets=1, threads=1).compile(judge, TRAIN, exact, devset=DEV)
    assert json.loads(studies.made[0].user_attrs["candidates"])["demo_sets"] == [dumped()]


def test_trials_are_scored_on_seeded_minibatches_and_examples_may_be_mappings(studies: Studies) -> None:
    """Each dev example is worth a different amount, so a trial's score names its minibatch.
    With one instruction and one demo set the examples need no labels: plain mappings do,
    and their values need not be JSON (the study's name is a digest of them all)."""

    def weight(example: lmdsl.Example, prediction: str) -> float:
        return float(example.weight)

    dev = [
        {"text": text, "weight": w}
        for text, w in [("lovely", 0.01), ("great", 0.02), ("sunny", 0.04), ("dull", 0.08), ("grim", 0.16)]
    ]
    train = [{"text": "good", "label": "POS", "seen": date(2024, 1, 2)}]
    optimizer = MIPRO(trials=3, minibatch_size=2, instructions=1, demo_sets=1, seed=2, threads=1)
    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"mood": "pos"}, name="scripted-weights")):
        compiled = optimizer.compile(
            judge, cast(Sequence[lmdsl.Example], train), weight, devset=cast(Sequence[lmdsl.Example], dev)
        )
    assert compiled.baseline == pytest.approx(6.2)  # the whole dev set: 100 * 0.31 / 5
    [study] = studies.made
    assert study.study_name == "judge-49c05aa1697097b9"
    # great + grim, great + dull, dull + grim
    assert [t.value for t in study.trials] == pytest.approx([9.0, 5.0, 12.0])
    assert compiled.lm_calls == 5 + 3 * 2


def made_trial(instruction: int, demo_set: int, value: float, digest: str, sizes: tuple[int, int] = (2, 2)) -> Any:
    """A completed trial, as a worker would have left it: `sizes` are the numbers of instructions and demo sets."""
    instructions, demo_sets = (optuna.distributions.CategoricalDistribution(list(range(n))) for n in sizes)
    return optuna.trial.create_trial(
        params={"mood:instruction": instruction, "mood:demos": demo_set},
        distributions={"mood:instruction": instructions, "mood:demos": demo_sets},
        value=value,
        user_attrs={"candidates": digest},
    )


def test_the_full_evaluation_picks_the_best_mean_of_this_studys_trials_and_the_best_score_wins(
    studies: Studies,
) -> None:
    studies.shared = True
    options: dict[str, Any] = dict(instructions=2, demo_sets=2, seed=0, threads=1, study_name="made")

    model = lmdsl.ScriptedModel(one_proposal)
    with lmdsl.using(model=model):
        MIPRO(trials=0, **options).compile(judge, TRAIN, exact, devset=DEV)
    [study] = studies.made
    assert '"text": "café"' in study.user_attrs["candidates"]  # the labelled demos' text as it is, not escaped
    [baseline_key] = [key for key in study.user_attrs if key.startswith("full:")]
    digest = baseline_key.split(":")[1]
    assert baseline_key == f'full:{digest}:{{"mood": [0, 0]}}' and study.user_attrs[baseline_key] == 75.0

    study.add_trial(made_trial(1, 0, 90.0, digest))  # the best mean: 90
    study.add_trial(made_trial(0, 1, 60.0, digest))  # a mean of 60 over two trials
    study.add_trial(made_trial(0, 1, 60.0, digest))
    study.add_trial(made_trial(1, 1, 99.0, "another"))  # a trial on other candidates does not count
    running = study.ask(
        {
            "mood:instruction": optuna.distributions.CategoricalDistribution([0, 1]),
            "mood:demos": optuna.distributions.CategoricalDistribution([0, 1]),
        }
    )
    running.set_user_attr("candidates", digest)  # a trial without a value (its worker died) does not count
    study.set_user_attr(f'full:{digest}:{{"mood": [1, 1]}}', 10.0)  # scored on the dev set by another worker

    calls_before = len(model.requests)
    with lmdsl.using(model=model):
        resumed = MIPRO(trials=4, **options).compile(judge, TRAIN, exact, devset=DEV)
    assert len(model.requests) - calls_before == 4  # no proposals again, no baseline again: one full evaluation
    labelled = (("café", "POS"), ("nice", "POS"), ("bad", "NEG"), ("good", "POS"))
    assert resumed.candidates == (
        Candidate("zero-shot, docstrings", demos(DOCSTRING), 75.0),
        Candidate('trial combination {"mood": [1, 1]}', demos("Proposal 1.", *labelled), 10.0),
        Candidate('trial combination {"mood": [1, 0]}', demos("Proposal 1."), 100.0),
    )
    assert resumed.params == demos("Proposal 1.")
    assert (resumed.score, resumed.baseline, resumed.lm_calls) == (100.0, 75.0, 4)

    with lmdsl.using(model=model):
        again = MIPRO(trials=4, **options).compile(judge, TRAIN, exact, devset=DEV)
    # the next best mean is scored, and nothing else: the baseline is read from the study
    assert (again.lm_calls, again.baseline, again.score) == (4, 75.0, 100.0)
    assert [(c.label, c.score) for c in again.candidates if c.label.endswith("[0, 1]}")] == [
        ('trial combination {"mood": [0, 1]}', 100.0)
    ]


def test_a_trial_that_made_no_choice_for_a_part_counts_as_its_first_candidate(studies: Studies) -> None:
    """Index 0 is the docstring and the empty demo set: what a trial that chose nothing there means."""
    studies.shared = True
    choices = optuna.distributions.CategoricalDistribution([0, 1])
    options: dict[str, Any] = dict(instructions=2, demo_sets=2, seed=0, threads=1)
    with lmdsl.using(model=lmdsl.ScriptedModel(one_proposal)):
        MIPRO(trials=0, **options).compile(judge, TRAIN, exact, devset=DEV)
        [study] = studies.made
        digest = next(key for key in study.user_attrs if key.startswith("full:")).split(":")[1]
        study.add_trial(
            optuna.trial.create_trial(
                params={"mood:instruction": 1},
                distributions={"mood:instruction": choices},
                value=80.0,
                user_attrs={"candidates": digest},
            )
        )
        first = MIPRO(trials=1, **options).compile(judge, TRAIN, exact, devset=DEV)
        study.add_trial(
            optuna.trial.create_trial(
                params={"mood:demos": 1},
                distributions={"mood:demos": choices},
                value=70.0,
                user_attrs={"candidates": digest},
            )
        )
        second = MIPRO(trials=2, **options).compile(judge, TRAIN, exact, devset=DEV)
    assert [c.label for c in first.candidates] == ["zero-shot, docstrings", 'trial combination {"mood": [1, 0]}']
    assert [c.label for c in second.candidates] == [
        "zero-shot, docstrings",
        'trial combination {"mood": [1, 0]}',
        'trial combination {"mood": [0, 1]}',
    ]


def test_the_last_trial_is_followed_by_one_full_evaluation_only(studies: Studies) -> None:
    """Two combinations wait for a full evaluation after the last trial: only the better is scored."""
    studies.shared = True
    options: dict[str, Any] = dict(instructions=2, demo_sets=2, full_eval_every=2, seed=0, threads=1)
    with lmdsl.using(model=lmdsl.ScriptedModel(one_proposal)):
        MIPRO(trials=0, **options).compile(judge, TRAIN, exact, devset=DEV)
        [study] = studies.made
        digest = next(key for key in study.user_attrs if key.startswith("full:")).split(":")[1]
        study.add_trial(made_trial(1, 0, 90.0, digest))
        # the second trial: labelled demos, 100 on the dev set
        study.enqueue_trial({"mood:instruction": 0, "mood:demos": 1})
        compiled = MIPRO(trials=2, **options).compile(judge, TRAIN, exact, devset=DEV)
    assert [(c.label, c.score) for c in compiled.candidates] == [
        ("zero-shot, docstrings", 75.0),
        ('trial combination {"mood": [0, 1]}', 100.0),
    ]
    assert compiled.lm_calls == 2 * len(DEV)  # the trial, then its full evaluation


def test_a_minibatch_as_large_as_the_dev_set_is_the_dev_set_in_its_order() -> None:
    order: list[str] = []

    def reply(request: Request) -> dict[str, Any]:
        order.append(asked(request))
        return classifier(request)

    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        MIPRO(trials=3, minibatch_size=len(DEV), instructions=1, demo_sets=1, threads=1).compile(
            judge, TRAIN, exact, devset=DEV
        )
    assert order == ["lovely", "great", "sunny", "dull"] * 4  # the baseline, then three trials


def test_candidates_replaced_by_another_worker_midway_are_the_ones_searched(studies: Studies) -> None:
    replaced: list[str] = []

    def reply(request: Request) -> dict[str, Any]:
        if not replaced:  # the first call (the baseline): another worker stores other candidates meanwhile
            study = studies.made[0]
            data = json.loads(study.user_attrs["candidates"])
            data["instructions"]["mood"].append("Proposal 1.")
            replaced.append(json.dumps(data))
            study.set_user_attr("candidates", replaced[0])
        return classifier(request)

    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        compiled = MIPRO(trials=2, instructions=1, demo_sets=2, threads=1).compile(judge, TRAIN, exact, devset=DEV)
    labelled = (("café", "POS"), ("nice", "POS"), ("bad", "NEG"), ("good", "POS"))
    assert compiled.candidates == (
        Candidate("zero-shot, docstrings", demos(DOCSTRING), 75.0),  # scored before the change: still the baseline
        Candidate('trial combination {"mood": [1, 1]}', demos("Proposal 1.", *labelled), 100.0),
    )
    assert (compiled.score, compiled.baseline) == (100.0, 75.0)
    [study] = studies.made
    assert study.user_attrs["candidates"] == replaced[0]
    assert [t.params for t in study.trials] == [
        {"mood:instruction": 1, "mood:demos": 0},
        {"mood:instruction": 1, "mood:demos": 1},
    ]
    assert len({t.user_attrs["candidates"] for t in study.trials}) == 1


@pytest.mark.parametrize(
    "stored",
    [
        {"instructions": {"mood": [DOCSTRING]}, "demo_sets": []},
        {"instructions": {"mood": []}, "demo_sets": [{"mood": []}]},
    ],
)
def test_a_study_without_candidates_to_search_is_unreadable(studies: Studies, stored: dict[str, Any]) -> None:
    studies.prepare = lambda study: study.set_user_attr("candidates", json.dumps(stored))
    with lmdsl.using(model=lmdsl.ScriptedModel(classifier)):
        with pytest.raises(lmdsl.ArtifactError) as caught:
            MIPRO(trials=1, instructions=1, demo_sets=2, threads=1).compile(judge, TRAIN, exact, devset=DEV)
    assert (
        str(caught.value)
        == "the Optuna study holds unreadable MIPRO candidates (no candidates); delete the study to start afresh"
    )


def test_a_named_study_started_for_another_setup_says_what_to_do(tmp_path: Path) -> None:
    storage = sqlite(tmp_path)
    with lmdsl.using(model=lmdsl.ScriptedModel(classifier)):
        MIPRO(trials=1, instructions=1, demo_sets=1, threads=1, storage=storage, study_name="s").compile(
            judge, TRAIN, exact, devset=DEV
        )
        with pytest.raises(lmdsl.ConfigurationError) as caught:
            MIPRO(trials=1, instructions=1, demo_sets=1, threads=1, storage=storage, study_name="s", seed=9).compile(
                judge, TRAIN, exact, devset=DEV
            )
    assert str(caught.value) == (
        f"the Optuna study 's' in {storage} was started for another version of judge (its fuzzy functions, data, "
        "model or MIPRO settings differ): give MIPRO another study_name, or leave study_name unset to get one named after the setup"
    )


def test_mipro_without_optuna_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(lmdsl.ConfigurationError) as caught:
        MIPRO().compile(judge, TRAIN, exact)
    assert str(caught.value) == "MIPRO needs optuna: pip install 'lmdsl[compile]'"


def test_each_trial_samples_with_a_multivariate_tpe_seeded_by_its_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """The study is made with the seed; trial N then samples with seed * 7919 + N, so workers sharing
    a study (all with the same seed) do not draw the same combinations. No "constant liar": a trial
    left RUNNING by a killed worker is not a score."""
    made: list[dict[str, Any]] = []
    real = optuna.samplers.TPESampler

    def recording(**options: Any) -> Any:
        made.append(options)
        return real(**options)

    monkeypatch.setattr(optuna.samplers, "TPESampler", recording)
    with lmdsl.using(model=lmdsl.ScriptedModel(classifier)):
        MIPRO(trials=2, instructions=1, demo_sets=1, threads=1, seed=11).compile(judge, TRAIN, exact, devset=DEV)
    assert made == [
        {"seed": seed, "multivariate": True, "constant_liar": False} for seed in (11, 11 * 7919, 11 * 7919 + 1)
    ]


def test_a_worker_joining_a_shared_study_does_not_replay_the_first_workers_draws(studies: Studies) -> None:
    """Two compiles on one study, the second after the first (as a second worker, or a resumed
    compile, would): the second's random start-up trials are draws of their own. With one sampler
    seeded by MIPRO's seed per process, they repeated the first's, combination for combination."""
    studies.shared = True
    options: dict[str, Any] = dict(instructions=3, demo_sets=4, threads=1)
    with lmdsl.using(model=lmdsl.ScriptedModel(one_proposal)):
        MIPRO(trials=4, **options).compile(judge, TRAIN, exact, devset=DEV)
        MIPRO(trials=8, **options).compile(judge, TRAIN, exact, devset=DEV)
    [study] = studies.made
    drawn = [(t.params["mood:instruction"], t.params["mood:demos"]) for t in study.trials]
    assert len(drawn) == 8 and drawn[4:] != drawn[:4]
    assert drawn == [(1, 3), (1, 1), (0, 0), (1, 3), (0, 0), (1, 1), (0, 0), (1, 2)]


def test_a_trial_left_running_by_a_killed_worker_does_not_keep_tpe_from_its_combination(studies: Studies) -> None:
    """Ten trials (TPE's start-up) over 3 instructions x 4 demo sets, of which [1, 2] did best; a worker
    died trying [1, 2] again, and its trial stays RUNNING. The next trial is TPE's own, and goes back to
    [1, 2]. As a "constant liar" (Optuna's default) the dead trial counted as a worst score for [1, 2],
    for good: TPE drew [1, 2] for 0 of 200 seeds then, against 198 of 200 without the dead trial."""
    studies.shared = True
    options: dict[str, Any] = dict(instructions=3, demo_sets=4, threads=1)

    def reply(request: Request) -> dict[str, Any]:
        return {"instruction": f"Proposal {request.rollout}."} if kind(request) == "propose" else one_proposal(request)

    done = [(1, 2, 100), (1, 0, 10), (2, 0, 10), (2, 3, 40), (1, 0, 10), (0, 2, 50), (1, 1, 70), (1, 0, 10), (1, 3, 40)]
    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        MIPRO(trials=0, **options).compile(judge, TRAIN, exact, devset=DEV)
        [study] = studies.made
        stored = json.loads(study.user_attrs["candidates"])
        assert (len(stored["instructions"]["mood"]), len(stored["demo_sets"])) == (3, 4)
        digest = next(key for key in study.user_attrs if key.startswith("full:")).split(":")[1]
        for instruction, demo_set, value in [*done, (0, 0, 10)]:
            study.add_trial(made_trial(instruction, demo_set, value, digest, sizes=(3, 4)))
        study.enqueue_trial({"mood:instruction": 1, "mood:demos": 2})
        dead = study.ask()  # a worker asked for its trial, and died before scoring it
        dead.set_user_attr("candidates", digest)
        dead.suggest_categorical("mood:instruction", [0, 1, 2])
        dead.suggest_categorical("mood:demos", [0, 1, 2, 3])
        MIPRO(trials=11, **options).compile(judge, TRAIN, exact, devset=DEV)
    states = optuna.trial.TrialState
    assert [(t.state, t.params) for t in study.trials[10:]] == [
        (states.RUNNING, {"mood:instruction": 1, "mood:demos": 2}),
        (states.COMPLETE, {"mood:instruction": 1, "mood:demos": 2}),
    ]


def test_mipro_stops_making_demo_sets_and_trials_when_its_budget_is_spent(
    studies: Studies, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lmdsl.compiler")
    with lmdsl.using(model=lmdsl.ScriptedModel(classifier)), pytest.warns(lmdsl.BudgetWarning) as said:
        compiled = MIPRO(trials=5, instructions=1, demo_sets=5, max_lm_calls=1, threads=1).compile(
            judge, TRAIN, exact, devset=DEV
        )
    assert [str(w.message) for w in said] == [
        "judge: MIPRO's budget ran out (5 of 1 LM calls) before any trial's combination was scored on the whole dev "
        "set, so the compiled program is the program as given; raise max_lm_calls (or max_total_tokens), or search less"
    ]
    stored = json.loads(studies.made[0].user_attrs["candidates"])
    assert len(stored["demo_sets"]) == 3  # zero-shot, labelled, and a bootstrap cut short after one call
    assert compiled.candidates == (Candidate("zero-shot, docstrings", demos(DOCSTRING), 75.0),)
    assert (compiled.score, compiled.baseline, compiled.lm_calls) == (75.0, 75.0, 1 + len(DEV))  # no trial ran
    assert compiler_log(caplog)[0] == "3 demo sets per function, 1 LM calls so far"


def test_a_proposer_model_is_used_for_the_proposals_only(studies: Studies) -> None:
    """A proposer that cannot be reached proposes nothing; the program's model is never asked to."""
    model = lmdsl.ScriptedModel(classifier)
    with lmdsl.using(model=model):
        MIPRO(trials=1, instructions=3, demo_sets=1, proposer="no-such-model", threads=1).compile(
            judge, TRAIN, exact, devset=DEV
        )
    assert {kind(r) for r in model.requests} == {"run"}
    stored = json.loads(studies.made[0].user_attrs["candidates"])
    assert stored["instructions"] == {"mood": [DOCSTRING]}


def test_one_instruction_means_no_proposer_call_at_all() -> None:
    model = lmdsl.ScriptedModel(classifier)
    with lmdsl.using(model=model):
        MIPRO(trials=1, instructions=1, demo_sets=1, threads=1).compile(judge, TRAIN, exact, devset=DEV)
    assert {kind(r) for r in model.requests} == {"run"}


def test_failed_repeated_and_empty_proposals_are_dropped(studies: Studies) -> None:
    """The summary fails (so proposals get an empty one), the first proposal fails, then come a new
    instruction, the same again, the docstring and a blank one: only the new one is kept."""
    summaries: list[str] = []
    replies = {2: "Same.", 3: "Same.", 4: DOCSTRING, 5: "   "}

    def reply(request: Request) -> Any:
        if kind(request) == "summarize":
            return "not json"
        if kind(request) == "propose":
            summaries.append(
                request.messages[request.prefix_length].content.split("\ndata_summary: ", 1)[1].split("\n", 1)[0]
            )
            return {"instruction": replies[request.rollout]} if request.rollout in replies else "not json"
        return classifier(request)

    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        MIPRO(trials=0, instructions=6, demo_sets=1, threads=1).compile(judge, TRAIN, exact, devset=DEV)
    stored = json.loads(studies.made[0].user_attrs["candidates"])
    assert stored["instructions"] == {"mood": [DOCSTRING, "Same."]}
    assert summaries == [""] * 6  # rollout 1 is asked twice (it retries once), then 2, 3, 4 and 5


class Size(Enum):
    SMALL = "small"
    LARGE = "large"


@lmdsl.fuzzy
def plan(size: Size, note: str) -> str:
    """Plan the day."""


@lmdsl.program
def planner(size: Size, note: str) -> str:
    return plan(size, note)


PLANNER_SOURCE = (
    "@lmdsl.program\ndef planner(size: Size, note: str) -> str:\n    return plan(size, note)\n\n"
    '@lmdsl.fuzzy\ndef plan(size: Size, note: str) -> str:\n    """Plan the day."""\n'
)


def test_the_proposer_sees_ten_examples_cut_short_and_three_demos_with_values_as_text() -> None:
    notes = {1: "café au lait", 2: "x" * 450}
    train = [
        lmdsl.Example(size=Size.SMALL, note=notes.get(d, f"note {d}"), label=f"plan {d}", seen=date(2024, 1, d))
        for d in range(1, 12)
    ]
    answers = {example.note: example.label for example in train}
    seen: list[str] = []

    def reply(request: Request) -> dict[str, Any]:
        if kind(request) == "summarize":
            seen.append(request.messages[-1].content)
            return {"summarize_data": "Sizes and notes."}
        if kind(request) == "propose":
            seen.append(request.messages[-1].content)
            return {"instruction": "Plan it."}
        note = request.messages[request.prefix_length].content.split("note: ", 1)[1]
        return {"plan": answers[note]}

    def same(example: lmdsl.Example, prediction: str) -> bool:
        return bool(prediction == example.label)

    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        MIPRO(trials=0, instructions=2, demo_sets=3, threads=1).compile(planner, train, same, devset=train[:2])
    summarize, propose = seen
    long_start = '{"size": "Size.SMALL", "note": "'
    assert summarize.startswith("examples: ")
    assert json.loads(summarize.removeprefix("examples: ")) == [
        '{"size": "Size.SMALL", "note": "café au lait", "label": "plan 1", "seen": "2024-01-01"}',
        long_start + "x" * (400 - len(long_start)),
        *[
            f'{{"size": "Size.SMALL", "note": "note {d}", "label": "plan {d}", "seen": "2024-01-{d:02d}"}}'
            for d in range(3, 11)
        ],
    ]
    assert propose.startswith(f"program_code: {PLANNER_SOURCE}\ndata_summary: Sizes and notes.\n")
    fields = dict(line.split(": ", 1) for line in propose.split("\ndata_summary: ", 1)[1].splitlines()[1:])
    assert fields["step"] == 'plan(size, note) -> {"plan": string}'
    assert json.loads(fields["good_examples"]) == [
        '{"size": "Size.SMALL", "note": "café au lait"} -> {"plan": "plan 1"}',
        '{"size": "Size.SMALL", "note": "' + "x" * 450 + '"} -> {"plan": "plan 2"}',
        '{"size": "Size.SMALL", "note": "note 3"} -> {"plan": "plan 3"}',
    ]


def test_the_proposer_gets_what_source_can_be_read() -> None:
    """A program defined from a string has no readable source; its fuzzy function's is still shown."""
    namespace: dict[str, Any] = {"lmdsl": lmdsl, "mood": mood}
    exec("@lmdsl.program\ndef from_string(text: str) -> str:\n    return mood(text)\n", namespace)  # noqa: S102
    program = cast(lmdsl.Program[[str], str], namespace["from_string"])
    codes: list[str] = []

    def reply(request: Request) -> dict[str, Any]:
        if kind(request) == "propose":
            codes.append(request.messages[-1].content.split("\ndata_summary: ", 1)[0])
        return one_proposal(request)

    with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
        MIPRO(trials=0, instructions=2, demo_sets=1, threads=1).compile(program, TRAIN, exact, devset=DEV)
    assert codes == ['program_code: @lmdsl.fuzzy\ndef mood(text: str) -> str:\n    """Say pos or neg."""\n']


def colon_step(text: str) -> str:
    """Say pos or neg."""


colon_step.__name__ = "mood:v2"  # a name with a colon, as a function made at run time may have
named_step = lmdsl.fuzzy(colon_step)
STEPS = {"mood": named_step}


@lmdsl.program(functions=[named_step])
def by_table(text: str) -> str:
    return STEPS["mood"](text)


def test_a_function_whose_name_has_a_colon_is_searched_and_evaluated_by_its_whole_name() -> None:
    def reply(request: Request) -> dict[str, Any]:
        return {"mood:v2": ANSWERS[asked(request)] if demo_count(request) >= 2 else "pos"}

    try:
        with lmdsl.using(model=lmdsl.ScriptedModel(reply)):
            compiled = MIPRO(trials=2, instructions=1, demo_sets=2, threads=1).compile(
                by_table, TRAIN, exact, devset=DEV
            )
        labelled = tuple(
            lmdsl.Demo({"text": t}, label)
            for t, label in [("café", "POS"), ("nice", "POS"), ("bad", "NEG"), ("good", "POS")]
        )
        assert list(by_table.functions) == ["mood:v2"]
        assert compiled.candidates == (
            Candidate("zero-shot, docstrings", {"mood:v2": lmdsl.Params(DOCSTRING, ())}, 75.0),
            Candidate('trial combination {"mood:v2": [0, 1]}', {"mood:v2": lmdsl.Params(DOCSTRING, labelled)}, 100.0),
        )
    finally:
        named_step.reset_params()
