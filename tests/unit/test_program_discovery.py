"""Which fuzzy functions a program has: named in its code, listed, or found calling in a run."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lmdsl
from lmdsl.compiler import BootstrapFewShot
from lmdsl.data import Example
from lmdsl.lm.types import Request


@lmdsl.fuzzy
def shout(text: str) -> str:
    """Repeat the text in capitals."""


@lmdsl.fuzzy
def whisper(text: str) -> str:
    """Repeat the text in lower case."""


class Steps:
    loud = shout

    @property
    def exploding(self) -> Any:
        raise AssertionError("discovery must not run properties")


NAMESPACE = types.SimpleNamespace(quiet=whisper)


@lmdsl.program
def through_attributes(text: str) -> str:
    return str(NAMESPACE.quiet(Steps.loud(text)))


@lmdsl.program
def applying(text: str, step: Callable[[str], str]) -> str:
    return step(text)


@lmdsl.program(functions=[whisper])
def listed(text: str, step: Callable[[str], str]) -> str:
    return step(text)


def model(request: Request) -> dict[str, Any]:
    text = request.messages[-1].content.split(": ", 1)[1]
    key = "shout" if '"shout"' in (request.json_schema or "") else "whisper"
    return {key: text.upper() if key == "shout" else text.lower()}


@pytest.fixture(autouse=True)
def _model() -> Any:
    with lmdsl.using(model=lmdsl.ScriptedModel(model)):
        yield
    shout.reset_params()
    whisper.reset_params()


def test_functions_reached_through_a_class_or_a_namespace_are_found_without_running_code() -> None:
    assert dict(through_attributes.functions) == {"loud": shout, "quiet": whisper}


def test_a_function_passed_as_an_argument_is_found_by_the_run_that_calls_it() -> None:
    program = lmdsl.program(applying.__wrapped__)
    assert dict(program.functions) == {}
    assert program("Hi", shout) == "HI"
    assert dict(program.functions) == {"shout": shout}
    program("Hi", shout)
    program("Hi", whisper)
    assert list(program.functions) == ["shout", "whisper"]


def test_listed_functions_are_known_before_any_run() -> None:
    assert dict(listed.functions) == {"whisper": whisper}
    with pytest.raises(TypeError, match="functions= takes fuzzy functions"):
        lmdsl.program(functions=[print])(applying.__wrapped__)  # type: ignore[list-item]


def test_a_function_passed_as_an_argument_is_compiled(tmp_path: Path) -> None:
    program = lmdsl.program(applying.__wrapped__)
    train = [Example(text=t, step=shout, applying=t.upper()) for t in ("one", "two", "three")]

    def metric(example: Example, prediction: str) -> bool:
        return bool(prediction == example.fields["applying"])

    compiled = BootstrapFewShot(max_demos=2, max_labeled=0).compile(program, train, metric)
    assert [(d.inputs["text"], d.output) for d in compiled.params["shout"].demos] == [("one", "ONE"), ("two", "TWO")]
    with program.with_params(compiled.params):
        program.save(tmp_path / "params.json")
    fresh = lmdsl.program(functions=[shout])(applying.__wrapped__)
    fresh.load(tmp_path / "params.json")
    assert fresh.functions["shout"].params.demos == compiled.params["shout"].demos
    unaware = lmdsl.program(applying.__wrapped__)
    with pytest.raises(lmdsl.ArtifactError, match=r"functions=\[\.\.\.\]"):
        unaware.load(tmp_path / "params.json")


@pytest.mark.parametrize("value", [True, -1, 1.0, "2"])
def test_max_backtracks_must_be_a_whole_number(value: object) -> None:
    with pytest.raises(TypeError, match="max_backtracks must be a whole number"):
        lmdsl.program(max_backtracks=value)(applying.__wrapped__)  # type: ignore[call-overload]
