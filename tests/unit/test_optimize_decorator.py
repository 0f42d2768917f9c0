"""`@lmdsl.optimize`: the configuration it attaches, the wiring it checks, and `compile_program`."""

# Some programs here are wired wrongly on purpose; mypy's plugin would report each mistake.
# mypy: disable-error-code="lmdsl-wiring"

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import pytest

import lmdsl
from lmdsl.checking import collecting
from lmdsl.compiler import LabeledFewShot, RandomSearch, compile_program, optimize
from lmdsl.compiler.base import Candidate, Compiled
from lmdsl.program import StaleArtifactWarning
from lmdsl.scores import Metric


@lmdsl.fuzzy
def tag(message: str) -> Literal["spam", "ham"]:
    """Tag the message as spam or ham."""


TRAIN = [lmdsl.Example(message="win a prize", label="spam"), lmdsl.Example(message="lunch at noon?", label="ham")]
DEV = [lmdsl.Example(message="free money", label="spam")]


def exact(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction == example.label)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    tag.reset_params()


def stale_artifact(path: Path, program: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "format": "lmdsl-params/1",
                "program": program,
                "functions": {"tag": {"signature": "f" * 16, "instructions": "Old.", "demos": []}},
            }
        )
    )
    return path


def test_optimize_attaches_its_configuration_with_warn_on_stale_by_default(tmp_path: Path) -> None:
    optimization = optimize(trainset=TRAIN, metric=exact)
    assert optimization.on_stale == "warn"
    assert optimization.config.devset is None and optimization.config.artifact is None
    assert optimization.config.optimizer == RandomSearch()

    chosen = LabeledFewShot(k=1)

    @optimize(trainset=tuple(TRAIN), devset=DEV, metric=exact, optimizer=chosen, artifact=str(tmp_path / "a.json"))
    @lmdsl.program
    def triage(message: str) -> str:
        return tag(message)

    config = triage.compile_config
    assert config is not None
    assert config.trainset == TRAIN and isinstance(config.trainset, list)
    assert config.devset == DEV
    assert config.metric is exact and config.optimizer is chosen
    assert config.artifact == tmp_path / "a.json"


def test_a_stale_artifact_named_by_optimize_warns_by_default(tmp_path: Path) -> None:
    @optimize(trainset=TRAIN, metric=exact, artifact=stale_artifact(tmp_path / "a.json", "triage"))
    @lmdsl.program
    def triage(message: str) -> str:
        return tag(message)

    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"tag": "ham"})):
        with pytest.warns(StaleArtifactWarning, match="triage runs uncompiled"):
            assert triage("hello") == "ham"


def test_on_stale_raise_is_passed_on_to_the_program(tmp_path: Path) -> None:
    @optimize(trainset=TRAIN, metric=exact, artifact=stale_artifact(tmp_path / "a.json", "triage"), on_stale="raise")
    @lmdsl.program
    def triage(message: str) -> str:
        return tag(message)

    with lmdsl.using(model=lmdsl.ScriptedModel(lambda request: {"tag": "ham"})):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(lmdsl.ArtifactError, match="changed since"):
                triage("hello")


def test_optimize_on_anything_but_a_program_says_where_it_goes() -> None:
    with pytest.raises(TypeError) as caught:
        optimize(trainset=TRAIN, metric=exact)(tag)  # type: ignore[arg-type]
    assert str(caught.value) == "@lmdsl.optimize(...) decorates a program: put it above @lmdsl.program"


def test_a_metric_whose_prediction_cannot_take_the_output_is_named_in_the_error() -> None:
    def by_length(example: lmdsl.Example, prediction: int) -> bool:
        return prediction == len(example.message)

    with pytest.raises(lmdsl.SignatureError) as caught:

        @optimize(trainset=TRAIN, metric=by_length)
        @lmdsl.program
        def triage(message: str) -> str:
            return tag(message)

    assert [str(p) for p in caught.value.problems] == [
        "metric by_length: its prediction parameter takes int, but triage returns str; "
        "annotate it with str (or a type that accepts it)"
    ]
    assert [p.code for p in caught.value.problems] == ["lmdsl-wiring"]


def test_examples_need_only_the_parameters_without_defaults() -> None:
    @optimize(trainset=TRAIN, metric=exact)
    @lmdsl.program
    def triage(message: str, strict: bool = False, *extra: str, **options: str) -> str:
        return tag(message)

    with pytest.raises(lmdsl.SignatureError) as caught:

        @optimize(trainset=[lmdsl.Example(strict=True, label="ham")], metric=exact)
        @lmdsl.program
        def triage_again(message: str, strict: bool = False) -> str:
            return tag(message)

    assert [(str(p), p.code) for p in caught.value.problems] == [
        (
            "trainset example 1 of triage_again has no field 'message', a parameter of triage_again; "
            "its fields are strict, label",
            "lmdsl-wiring",
        )
    ]


class NamelessMetric:
    """A callable object: no `__name__`, so the error shows its repr."""

    prediction: int

    def __call__(self, example: lmdsl.Example, prediction: int) -> bool:
        return prediction == 1

    def __repr__(self) -> str:
        return "NamelessMetric()"


def test_a_metric_without_a_name_is_shown_by_its_repr() -> None:
    with pytest.raises(lmdsl.SignatureError) as caught:

        @optimize(trainset=TRAIN, metric=NamelessMetric())
        @lmdsl.program
        def triage(message: str) -> str:
            return tag(message)

    assert str(caught.value.problems[0]) == (
        "metric NamelessMetric(): its prediction parameter takes int, but triage returns str; "
        "annotate it with str (or a type that accepts it)"
    )


def test_a_program_without_a_return_annotation_takes_any_metric() -> None:
    def by_length(example: lmdsl.Example, prediction: int) -> bool:
        return prediction == len(example.message)

    @optimize(trainset=TRAIN, metric=by_length)
    @lmdsl.program
    def triage(message: str):  # type: ignore[no-untyped-def]
        return tag(message)

    assert triage.compile_config is not None and triage.compile_config.metric is by_length


def test_examples_given_as_mappings_are_checked_by_their_keys() -> None:
    plain = cast(Sequence[lmdsl.Example], [{"message": "win a prize", "label": "spam"}])

    @optimize(trainset=plain, metric=exact)
    @lmdsl.program
    def triage(message: str) -> str:
        return tag(message)

    assert triage.compile_config is not None
    assert triage.compile_config.trainset == [{"message": "win a prize", "label": "spam"}]

    with pytest.raises(lmdsl.SignatureError) as caught:

        @optimize(trainset=cast(Sequence[lmdsl.Example], [{"msg": "hi", "label": "ham"}]), metric=exact)
        @lmdsl.program
        def other(message: str) -> str:
            return tag(message)

    assert str(caught.value) == (
        "trainset example 1 of other has no field 'message', a parameter of other (did you mean \"msg\"?); "
        "its fields are msg, label"
    )


def test_the_devset_is_checked_too() -> None:
    with pytest.raises(lmdsl.SignatureError) as caught:

        @optimize(trainset=TRAIN, devset=[lmdsl.Example(text="free money", label="spam")], metric=exact)
        @lmdsl.program
        def triage(message: str) -> str:
            return tag(message)

    assert [str(p) for p in caught.value.problems] == [
        "trainset example 1 of triage has no field 'message', a parameter of triage; its fields are text, label"
    ]


def test_wiring_problems_are_collected_at_the_programs_definition() -> None:
    with collecting() as found:

        @optimize(trainset=[lmdsl.Example(text="x", label="spam")], metric=exact)
        @lmdsl.program
        def miswired(message: str) -> str:
            return tag(message)

    line = next(
        number
        for number, text in enumerate(Path(__file__).read_text().splitlines(), start=1)
        if text.strip().startswith("def miswired(")
    )
    assert [(f.path, f.line, f.code) for f in found] == [(__file__, line, "lmdsl-wiring")]
    assert miswired.compile_config is not None  # collected, not raised: the configuration is attached


class Recording:
    """An optimizer that records what it was given and returns a fixed result."""

    def __init__(self) -> None:
        self.devsets: list[Sequence[lmdsl.Example] | None] = []

    def compile(
        self,
        program: lmdsl.Program[..., Any],
        trainset: Sequence[lmdsl.Example],
        metric: Metric,
        *,
        devset: Sequence[lmdsl.Example] | None = None,
    ) -> Compiled:
        self.devsets.append(devset)
        chosen = {"tag": lmdsl.Params("Tag it.", (lmdsl.Demo({"message": "win a prize"}, "spam"),))}
        return Compiled(
            chosen, 100.0, 50.0, (Candidate("fixed", chosen, 100.0),), 3, 30, 0.5, {"optimizer": "Recording"}
        )


@lmdsl.program
def bare(message: str) -> str:
    return tag(message)


def test_compile_program_without_a_configuration_says_how_to_add_one() -> None:
    with pytest.raises(TypeError) as caught:
        compile_program(bare)
    assert str(caught.value) == "bare has no compile configuration: decorate it with @lmdsl.optimize(...)"


def test_compile_program_passes_the_devset_and_writes_the_artifact_with_the_model_name(tmp_path: Path) -> None:
    recording = Recording()
    artifact = tmp_path / "triage.json"

    @optimize(trainset=TRAIN, devset=DEV, metric=exact, optimizer=recording, artifact=artifact)
    @lmdsl.program
    def triage(message: str) -> str:
        return tag(message)

    with lmdsl.using(model=lmdsl.ScriptedModel([], name="scripted-x")):
        compiled = compile_program(triage, write=False)
        assert not artifact.exists()  # write=False: nothing written
        compile_program(triage)
    assert recording.devsets == [DEV, DEV]
    assert compiled.score == 100.0
    data = json.loads(artifact.read_text())
    assert data["model"] == "scripted-x"
    assert data["scores"] == {"uncompiled": 50.0, "compiled": 100.0}

    with lmdsl.using(model="openai:gpt-4.1-mini"):
        compile_program(triage)
    assert json.loads(artifact.read_text())["model"] == "openai:gpt-4.1-mini"


def test_compile_program_without_an_artifact_writes_nothing(tmp_path: Path) -> None:
    recording = Recording()

    @optimize(trainset=TRAIN, metric=exact, optimizer=recording)
    @lmdsl.program
    def triage(message: str) -> str:
        return tag(message)

    compiled = compile_program(triage, write=False)
    assert recording.devsets == [None]
    assert compiled.lm_calls == 3 and list(tmp_path.iterdir()) == []
