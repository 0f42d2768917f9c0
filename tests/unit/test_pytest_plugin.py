"""lmdsl's pytest plugin: cassettes at the LM boundary, the live-call guard, the fixtures.

The plugin is tried on test files of its own, run by pytest's `pytester` in this process.
Their "real" model is `Real`, a backend that is not a `ScriptedModel` (so the plugin treats
it as a live model) and answers from the request, so that what a cassette replays can be
told from what the model said.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lmdsl
from lmdsl.config import intercepting
from lmdsl.lm.types import Backend, Completion, Request, Usage
from lmdsl.plugins.cassettes import Cassette, describe_difference, legible_request
from tests.provider_servers import FakeServer, Recorded, Reply, openai_message

pytest_plugins = ["pytester"]

# The tests here run pytest on tests of their own: the outer test is no model user itself.
pytestmark = pytest.mark.lmdsl_live

CONFTEST = '''
import json
import os

import pytest

import lmdsl


class Real:
    """Stands in for a live model: answers {"<field>": "<prefix> <last message>"}."""

    def __init__(self, prefix: str = "said") -> None:
        self.prefix = prefix
        self.requests = []

    @property
    def name(self) -> str:
        return "real:/home/someone/models/model.gguf"

    def complete(self, request):
        self.requests.append(request)
        field = next(iter(json.loads(request.json_schema)["properties"]))
        text = json.dumps({field: f"{self.prefix} {request.messages[-1].content}"})
        return lmdsl.Completion(text, lmdsl.Usage(10, 3))


@pytest.fixture
def model():
    """The real model, its replies starting with LMDSL_PLUGIN_MODEL (default "said"), or
    (LMDSL_PLUGIN_MODEL=absent) a model that cannot even be loaded."""
    kind = os.environ.get("LMDSL_PLUGIN_MODEL", "said")
    backend = Real(kind) if kind != "absent" else "local:/no/such/model.gguf"
    with lmdsl.using(model=backend, cache=False):
        yield backend
'''

ECHO = '''
import asyncio

import pytest

import lmdsl


@lmdsl.fuzzy
def echo(text: str) -> str:
    """{docstring}"""

'''


@pytest.fixture
def tests_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("LMDSL_PLUGIN_MODEL", raising=False)
    pytester.makeconftest(CONFTEST)
    return pytester


# Other plugins of this environment, off in the runs below: each run re-imports what it imports
# (pytester restores `sys.modules` afterwards), and hypothesis alone is a hundred modules.
OTHER_PLUGINS = ("hypothesispytest", "inline_snapshot", "anyio", "pytest-mypy-plugins", "pytest_cov", "platformdirs")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest on the test files, in this process, with lmdsl's plugin and pytest's own only."""
    blocked = [option for name in OTHER_PLUGINS for option in ("-p", f"no:{name}")]
    return pytester.runpytest(*blocked, "-p", "no:cacheprovider", *args)


def write(pytester: pytest.Pytester, name: str, body: str, docstring: str = "Answer the text.") -> None:
    """A test module (written anew: no stale bytecode of an earlier version is used)."""
    shutil.rmtree(pytester.path / "__pycache__", ignore_errors=True)
    pytester.makepyfile(**{name: ECHO.replace("{docstring}", docstring) + body})


def cassette(pytester: pytest.Pytester, module: str, test: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((pytester.path / "cassettes" / module / f"{test}.json").read_text())
    return document


def texts(document: dict[str, Any]) -> list[str]:
    return [entry["completion"]["text"] for entry in document["interactions"]]


def user_messages(document: dict[str, Any]) -> list[str]:
    return [entry["request"]["messages"][-1]["content"] for entry in document["interactions"]]


ROUND_TRIP = """
@pytest.mark.lmdsl_cassette
def test_echo(model):
    assert echo("hi") == "said text: hi"
"""


# -- record, then replay --------------------------------------------------------------------
def test_a_recorded_cassette_replays_with_no_model_at_all(
    tests_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tests_dir, "test_trip", ROUND_TRIP)
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    document = cassette(tests_dir, "test_trip", "test_echo")
    assert document["lmdsl_cassette"] == 1 and document["test"] == "test_trip.py::test_echo"
    [entry] = document["interactions"]
    assert entry["function"] == "echo" and entry["model"] == "real:/home/someone/models/model.gguf"
    request = entry["request"]
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["messages"][0]["content"].startswith("Answer the text.")
    assert request["messages"][1]["content"] == "text: hi"
    assert request["json_schema"]["properties"] == {"echo": {"type": "string"}}  # JSON, not escaped text
    assert (request["temperature"], request["rollout"]) == (0.0, 0)
    assert entry["completion"] == {
        "text": '{"echo": "said text: hi"}',
        "finish_reason": "stop",
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    written = (tests_dir.path / "cassettes" / "test_trip" / "test_echo.json").read_text()
    assert written.startswith('{\n  "lmdsl_cassette": 1,')  # indented: a reviewer reads the diff

    monkeypatch.setenv("LMDSL_PLUGIN_MODEL", "absent")  # the model cannot be loaded now
    run(tests_dir).assert_outcomes(passed=1)
    assert (
        tests_dir.path / "cassettes" / "test_trip" / "test_echo.json"
    ).read_text() == written  # replay writes nothing


def test_replays_ignore_the_model_name_and_count_as_the_recorded_calls_did(
    tests_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tests_dir,
        "test_counts",
        """
@pytest.mark.lmdsl_cassette
def test_echo(model, lmdsl_history):
    assert echo("hi").endswith("text: hi")
    [record] = lmdsl_history
    assert not record.cached and record.spent.lm_calls == 1 and record.usage == lmdsl.Usage(10, 3)
""",
    )
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    path = tests_dir.path / "cassettes" / "test_counts" / "test_echo.json"
    document = json.loads(path.read_text())
    document["interactions"][0]["model"] = "local:/another/machine/model.gguf"
    path.write_text(json.dumps(document))
    monkeypatch.setenv("LMDSL_PLUGIN_MODEL", "absent")
    run(tests_dir).assert_outcomes(passed=1)


def test_a_missing_cassette_fails_in_replay_and_says_how_to_record(tests_dir: pytest.Pytester) -> None:
    write(tests_dir, "test_missing", ROUND_TRIP)
    result = run(tests_dir)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*CassetteMismatch: test_missing.py::test_echo: echo made a request that is not in the cassette*",
            "*there is no cassette file yet*",
            "*--lmdsl-record=new*",
        ]
    )
    assert not (tests_dir.path / "cassettes").exists()


# -- the record modes -----------------------------------------------------------------------
def test_new_replays_what_matches_and_records_only_the_rest(
    tests_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tests_dir, "test_modes", ROUND_TRIP.replace("hi", "a"))
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    before = cassette(tests_dir, "test_modes", "test_echo")
    write(
        tests_dir,
        "test_modes",
        """
@pytest.mark.lmdsl_cassette
def test_echo(model, lmdsl_cassette):
    assert echo("a") == "said text: a"
    assert echo("b") == "new text: b"
    print("LIVE", [m.content for r in model.requests for m in r.messages if m.role == "user"])
    print("COUNTS", lmdsl_cassette.played, lmdsl_cassette.recorded)
""",
    )
    monkeypatch.setenv("LMDSL_PLUGIN_MODEL", "new")
    result = run(tests_dir, "--lmdsl-record=new", "-s")
    result.assert_outcomes(passed=1)
    assert "LIVE ['text: b']\nCOUNTS 1 1\n" in result.stdout.str()
    after = cassette(tests_dir, "test_modes", "test_echo")
    assert after["interactions"][0] == before["interactions"][0]
    assert texts(after) == ['{"echo": "said text: a"}', '{"echo": "new text: b"}']


def test_new_with_nothing_new_leaves_the_file_alone(tests_dir: pytest.Pytester) -> None:
    write(tests_dir, "test_still", ROUND_TRIP)
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    path = tests_dir.path / "cassettes" / "test_still" / "test_echo.json"
    path.write_text(path.read_text() + "\n\n")  # any write would normalise this
    run(tests_dir, "--lmdsl-record=new").assert_outcomes(passed=1)
    assert path.read_text().endswith("}\n\n\n")


def test_all_records_every_request_again_and_rewrites_the_file(
    tests_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tests_dir,
        "test_again",
        """
@pytest.mark.lmdsl_cassette
def test_echo(model):
    echo("a")
    echo("b")
""",
    )
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    assert user_messages(cassette(tests_dir, "test_again", "test_echo")) == ["text: a", "text: b"]
    write(
        tests_dir,
        "test_again",
        """
@pytest.mark.lmdsl_cassette
def test_echo(model):
    assert echo("a") == "fresh text: a"
    assert echo("c") == "fresh text: c"
    print("LIVE", len(model.requests))
""",
    )
    monkeypatch.setenv("LMDSL_PLUGIN_MODEL", "fresh")
    result = run(tests_dir, "--lmdsl-record=all", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*LIVE 2"])  # "a" was recorded, and asked again all the same
    document = cassette(tests_dir, "test_again", "test_echo")
    assert user_messages(document) == ["text: a", "text: c"]
    assert texts(document) == ['{"echo": "fresh text: a"}', '{"echo": "fresh text: c"}']


def test_identical_requests_are_answered_in_the_order_they_were_recorded(tests_dir: pytest.Pytester) -> None:
    write(
        tests_dir,
        "test_twice",
        """
import itertools

class Counting:
    name = "counting"
    def __init__(self):
        self.count = itertools.count(1)
    def complete(self, request):
        return lmdsl.Completion('{"echo": "%d"}' % next(self.count))

@pytest.mark.lmdsl_cassette
def test_echo():
    with lmdsl.using(model=Counting(), cache=False):
        assert [echo("x"), echo("x"), echo("x")] == ["1", "2", "3"]
""",
    )
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    run(tests_dir).assert_outcomes(passed=1)
    path = tests_dir.path / "cassettes" / "test_twice" / "test_echo.json"
    document = json.loads(path.read_text())
    del document["interactions"][2]
    path.write_text(json.dumps(document))
    result = run(tests_dir)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*this request was recorded 2 time(s), and the test has made it more often*"])


# -- a request that is not in the cassette --------------------------------------------------
def test_a_changed_docstring_fails_with_a_diff_of_the_system_message(tests_dir: pytest.Pytester) -> None:
    write(tests_dir, "test_drift", ROUND_TRIP)
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    write(tests_dir, "test_drift", ROUND_TRIP, docstring="Answer the text politely.")
    result = run(tests_dir)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*CassetteMismatch: test_drift.py::test_echo: echo made a request that is not in the cassette *"
            "test_echo.json (--lmdsl-record=none: replay only).",
            "*the closest recorded request (interaction 1 of 1, made by echo) differs:",
            "*message 0 (system) changed:",
            "*--- recorded",
            "*+++ this request",
            "*-Answer the text.",
            "*+Answer the text politely.",
            "*pytest --lmdsl-record=new*",
        ]
    )
    assert "message 1" not in result.stdout.str()  # the input did not change


def test_a_changed_setting_is_named(tests_dir: pytest.Pytester) -> None:
    write(tests_dir, "test_hot", ROUND_TRIP)
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    write(
        tests_dir,
        "test_hot",
        """
@pytest.mark.lmdsl_cassette
def test_echo(model):
    with lmdsl.using(temperature=0.7):
        echo("hi")
""",
    )
    result = run(tests_dir)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*temperature: recorded 0.0, this request 0.7*"])
    assert "message 0" not in result.stdout.str()


def test_describe_difference_names_messages_added_removed_and_the_schema() -> None:
    def request(*contents: str, schema: str | None = None) -> dict[str, Any]:
        return legible_request(Request(tuple(lmdsl.Message("user", c) for c in contents), json_schema=schema))

    added = describe_difference(request("a"), request("a", "b"))
    assert "has 1 message(s), this one 2" in added and "message 1 (user) is new: 'b'" in added
    assert "message 1 (user) is missing: 'b'" in describe_difference(request("a", "b"), request("a"))
    schema = describe_difference(request("a", schema='{"type": "integer"}'), request("a", schema='{"type": "string"}'))
    assert schema.splitlines()[0] == "json_schema changed:"
    assert '-  "type": "integer"' in schema and '+  "type": "string"' in schema
    assert "model's name" in describe_difference(request("a"), request("a"))


# -- threads, tasks, and what reaches the file ----------------------------------------------
def test_cassettes_record_and_replay_calls_in_map_threads_and_acall(
    tests_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tests_dir,
        "test_threads",
        """
@pytest.mark.lmdsl_cassette
def test_echo(model):
    outcomes = echo.map([{"text": str(i)} for i in range(8)], threads=4)
    assert [o.unwrap() for o in outcomes] == [f"said text: {i}" for i in range(8)]
    assert asyncio.run(echo.acall("async")) == "said text: async"
    examples = [lmdsl.Example(text="e", echo="said text: e"), lmdsl.Example(text="f", echo="said text: f")]
    result = lmdsl.evaluate(echo, examples, lambda example, output: output == example.echo, threads=2, progress=False)
    assert result.score == 100.0
""",
    )
    run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
    assert sorted(user_messages(cassette(tests_dir, "test_threads", "test_echo"))) == sorted(
        [f"text: {i}" for i in range(8)] + ["text: async", "text: e", "text: f"]
    )
    monkeypatch.setenv("LMDSL_PLUGIN_MODEL", "absent")
    run(tests_dir).assert_outcomes(passed=1)


def test_a_mismatch_caught_by_map_still_fails_the_test(tests_dir: pytest.Pytester) -> None:
    write(
        tests_dir,
        "test_swallowed",
        """
@pytest.mark.lmdsl_cassette
def test_echo(model):
    outcomes = echo.map([{"text": "x"}, {"text": "y"}], threads=2)
    assert all(not o.ok for o in outcomes)  # the code under test keeps the errors
""",
    )
    result = run(tests_dir)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CassetteMismatch*", "*caught by the code under test; the test fails anyway*"])


def test_a_cassette_recorded_through_a_hosted_backend_holds_no_key(
    tests_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "lmdsl-test-key-5f2c9a1e77d04b3c"
    shaped = "sk-proj-abcdefghijklmnopqrstuvwx"

    def answer(request: Recorded) -> Reply:  # a provider that echoes the key it was sent
        sent = request.headers["authorization"].removeprefix("Bearer ")
        return openai_message(json.dumps({"echo": f"your key is {sent}, mine is {shaped}"}))

    monkeypatch.setenv("OPENAI_API_KEY", key)
    with FakeServer(answer) as server:
        write(
            tests_dir,
            "test_hosted",
            f"""
@pytest.mark.lmdsl_cassette
def test_echo():
    backend = lmdsl.OpenAIModel("test-model", base_url="{server.url}/v1")
    with lmdsl.using(model=backend):
        assert echo("my key is {key}").startswith("your key is")
""",
        )
        run(tests_dir, "--lmdsl-record=all").assert_outcomes(passed=1)
        assert len(server.requests) == 1
        run(tests_dir).assert_outcomes(passed=1)  # the scrubbed request still matches
        assert len(server.requests) == 1
    written = (tests_dir.path / "cassettes" / "test_hosted" / "test_echo.json").read_text()
    assert key not in written and shaped not in written
    assert "my key is [redacted]" in written and "your key is [redacted], mine is [redacted]" in written
    assert "authorization" not in written.lower() and "bearer" not in written.lower()


# -- the live-call guard --------------------------------------------------------------------
GUARDED = """
[pytest]
lmdsl_allow_model_requests = false
"""


def test_the_guard_fails_a_test_that_calls_a_live_model_naming_it_and_the_function(
    tests_dir: pytest.Pytester,
) -> None:
    tests_dir.makeini(GUARDED)
    write(
        tests_dir,
        "test_guard",
        """
def test_calls_a_real_model(model):
    echo("hi")

def test_calls_one_in_threads(model):
    assert not echo.map([{"text": "a"}, {"text": "b"}])[0].ok

@pytest.mark.lmdsl_live
def test_may_call_one(model):
    assert echo("hi") == "said text: hi"

def test_scripted_is_fine(lmdsl_scripted):
    lmdsl_scripted([{"echo": "scripted"}])
    assert echo("hi") == "scripted"

class Double:
    # a test double of the suite's own: it says it calls no model
    name = "double"
    live = False
    def complete(self, request):
        return lmdsl.Completion('{"echo": "doubled"}')

def test_a_test_double_that_says_so_is_fine():
    with lmdsl.using(model=Double()):
        assert echo("hi") == "doubled"

def test_a_scripted_model_in_the_cache_is_fine():
    with lmdsl.using(model=lmdsl.ScriptedModel([{"echo": "cached"}], cacheable=True), cache=True):
        assert echo("hi") == "cached"
""",
    )
    result = run(tests_dir)
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*LiveModelCallError: test_guard.py::test_calls_a_real_model: echo called the model "
            "'real:/home/someone/models/model.gguf' (a Real), but this test may not make model requests*",
            "*LiveModelCallError: test_guard.py::test_calls_one_in_threads: echo called the model*",
        ]
    )


def test_the_guard_is_off_by_default(tests_dir: pytest.Pytester) -> None:
    write(tests_dir, "test_open", "def test_calls_a_real_model(model):\n    assert echo('hi') == 'said text: hi'\n")
    run(tests_dir).assert_outcomes(passed=1)


def test_a_cassette_may_record_from_a_live_model_in_a_guarded_suite(tests_dir: pytest.Pytester) -> None:
    tests_dir.makeini(GUARDED)
    write(tests_dir, "test_taped", ROUND_TRIP)
    run(tests_dir).assert_outcomes(failed=1)  # replay only: nothing recorded yet
    run(tests_dir, "--lmdsl-record=new").assert_outcomes(passed=1)
    run(tests_dir).assert_outcomes(passed=1)


def test_under_the_guard_a_model_that_cannot_be_resolved_raises_its_own_error(
    tests_dir: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests_dir.makeini(GUARDED)
    write(tests_dir, "test_absent", "def test_it(model):\n    echo('hi')\n")
    monkeypatch.setenv("LMDSL_PLUGIN_MODEL", "absent")
    result = run(tests_dir)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ModelUnavailableError: no model file at /no/such/model.gguf*"])
    assert "LiveModelCallError" not in result.stdout.str()


# -- fixtures, markers, options -------------------------------------------------------------
def test_the_fixtures(tests_dir: pytest.Pytester) -> None:
    tests_dir.makeini(GUARDED)
    write(
        tests_dir,
        "test_fixtures",
        """
def test_scripted_and_history(lmdsl_scripted, lmdsl_history):
    model = lmdsl_scripted([{"echo": "one"}, {"echo": "two"}])
    assert isinstance(model, lmdsl.ScriptedModel)
    assert [echo("a"), echo("b")] == ["one", "two"]
    assert [r.output for r in lmdsl_history] == ["one", "two"]
    assert model.requests[1].messages[-1].content == "text: b"

def test_the_scripted_model_is_gone_after_the_test():
    assert lmdsl.settings().model_override is None

def test_cache_dir(lmdsl_cache_dir, lmdsl_scripted):
    assert lmdsl.settings().cache_dir == lmdsl_cache_dir and not any(lmdsl_cache_dir.iterdir())
    lmdsl_scripted([{"echo": "kept"}], cacheable=True)
    with lmdsl.using(cache=True):
        assert echo("a") == "kept" and echo("a") == "kept"
    assert any(lmdsl_cache_dir.iterdir())

def test_history_sees_threads(lmdsl_scripted, lmdsl_history):
    lmdsl_scripted(lambda request: {"echo": request.messages[-1].content})
    echo.map([{"text": str(i)} for i in range(4)], threads=2)
    assert sorted(r.output for r in lmdsl_history) == [f"text: {i}" for i in range(4)]
""",
    )
    run(tests_dir, "--strict-markers").assert_outcomes(passed=4)


def test_markers_and_options_are_registered(tests_dir: pytest.Pytester) -> None:
    markers = run(tests_dir, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.lmdsl_cassette(name=None):*", "@pytest.mark.lmdsl_live:*"])
    usage = run(tests_dir, "--help")
    usage.stdout.fnmatch_lines(["*--lmdsl-record={none,new,all}*", "*lmdsl_allow_model_requests*"])
    write(
        tests_dir,
        "test_strict",
        """
@pytest.mark.lmdsl_live
@pytest.mark.lmdsl_cassette("shared")
def test_it(model):
    echo("hi")
""",
    )
    run(tests_dir, "--strict-markers", "--lmdsl-record=all").assert_outcomes(passed=1)
    assert (tests_dir.path / "cassettes" / "test_strict" / "shared.json").is_file()
    run(tests_dir, "--lmdsl-record=sometimes").stderr.fnmatch_lines(["*invalid choice: 'sometimes'*"])


def test_parametrized_and_class_tests_get_safe_distinct_file_names(tests_dir: pytest.Pytester) -> None:
    write(
        tests_dir,
        "test_names",
        """
@pytest.mark.lmdsl_cassette
@pytest.mark.parametrize("text", ["a", "a b/c", "a_b_c"])
def test_echo(model, text, lmdsl_cassette):
    echo(text)
    print("PATH", lmdsl_cassette.path.name)

class TestGroup:
    @pytest.mark.lmdsl_cassette
    def test_echo(self, model):
        echo("in a class")
""",
    )
    result = run(tests_dir, "--lmdsl-record=all", "-s")
    result.assert_outcomes(passed=4)
    names = sorted(path.name for path in (tests_dir.path / "cassettes" / "test_names").iterdir())
    assert len(names) == 4
    assert "test_echo-a.json" in names and "test_echo-a_b_c.json" in names and "TestGroup.test_echo.json" in names
    [odd] = [name for name in names if name.startswith("test_echo-a_b_c-")]  # "a b/c": made safe, hashed apart
    assert "/" not in odd and " " not in odd


def test_a_malformed_cassette_is_a_typed_error_saying_how_to_fix_it(tests_dir: pytest.Pytester) -> None:
    write(tests_dir, "test_broken", ROUND_TRIP)
    folder = tests_dir.path / "cassettes" / "test_broken"
    folder.mkdir(parents=True)
    (folder / "test_echo.json").write_text('{"interactions": [{"request": {"messages": "hi"}}]}')
    result = run(tests_dir)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ArtifactError: the cassette *test_echo.json cannot be used: interaction 1:*"])


def test_the_plugin_can_be_turned_off(tests_dir: pytest.Pytester) -> None:
    tests_dir.makeini(GUARDED)
    write(tests_dir, "test_off", "def test_calls_a_real_model(model):\n    assert echo('hi') == 'said text: hi'\n")
    run(tests_dir, "-p", "no:lmdsl").assert_outcomes(passed=1)  # no guard
    write(tests_dir, "test_off", "def test_fixture(lmdsl_scripted):\n    pass\n")
    run(tests_dir, "-p", "no:lmdsl").assert_outcomes(errors=1)
    assert "--lmdsl-record" not in run(tests_dir, "-p", "no:lmdsl", "--help").stdout.str()


# -- the interception point itself ----------------------------------------------------------
@lmdsl.fuzzy
def shout(text: str) -> str:
    """Say the text louder."""


class Wrapped:
    """A backend wrapped by an interceptor: answers as its model would, and says who asked."""

    def __init__(self, backend: Backend, function: str, seen: list[str]) -> None:
        self.backend = backend
        self.function = function
        self.seen = seen

    @property
    def name(self) -> str:
        return self.backend.name

    def complete(self, request: Request) -> Completion:
        self.seen.append(self.function)
        return self.backend.complete(request)


@pytest.fixture
def seen() -> Iterator[list[str]]:
    calls: list[str] = []
    with intercepting(lambda backend, function: Wrapped(backend, function, calls)):
        yield calls


def test_an_interceptor_wraps_each_call_in_threads_and_tasks_too(seen: list[str]) -> None:
    model = lmdsl.ScriptedModel(lambda request: {"shout": request.messages[-1].content.upper()})
    with lmdsl.using(model=model):
        assert shout("a") == "TEXT: A"
        assert [o.unwrap() for o in shout.map([{"text": "b"}, {"text": "c"}], threads=2)] == ["TEXT: B", "TEXT: C"]
        assert asyncio.run(shout.acall("d")) == "TEXT: D"
    assert seen == ["shout"] * 4


def test_an_interceptor_does_not_wrap_a_strategys_sub_calls_twice(seen: list[str]) -> None:
    def replies(request: Request) -> dict[str, Any]:
        return {"loud": "x"}

    @lmdsl.fuzzy(strategy=lmdsl.best_of(3, reward=lambda out: 1.0))
    def loud(text: str) -> str:
        """Say it loud."""

    with lmdsl.using(model=lmdsl.ScriptedModel(replies), cache=False):
        loud("a")
        loud.invoke({"text": "b"}, backend=lmdsl.ScriptedModel(replies))  # a backend given: not wrapped
    assert [name.rpartition(".")[2] for name in seen] == [
        "loud"
    ] * 3  # the first call's three samples, through one wrapper


def test_a_model_that_cannot_be_resolved_fails_only_when_asked(seen: list[str]) -> None:
    with lmdsl.using(model="local:/no/such/model.gguf"), pytest.raises(lmdsl.ModelUnavailableError, match="no model"):
        shout("a")
    assert seen == ["shout"]


def test_with_no_interceptor_the_configured_backend_is_used_as_it_is() -> None:
    model = lmdsl.ScriptedModel([{"shout": "plain"}])
    with lmdsl.using(model=model):
        record = shout.invoke({"text": "a"})
    assert record.model == "scripted" and model.requests


def test_a_cassette_replays_without_the_pytest_plugin(tmp_path: Path) -> None:
    """The cassette is plain data: recorded through any backend, replayed by a `Cassette`."""
    request = Request((lmdsl.Message("user", "text: a"),), json_schema='{"type": "object"}')
    real = lmdsl.ScriptedModel([Completion('{"shout": "A"}', Usage(4, 2), "length")])
    recording = Cassette(tmp_path / "c.json", "all", "t")
    assert recording.answer(real, "shout", request).text == '{"shout": "A"}'
    assert recording.save()
    replay = Cassette(tmp_path / "c.json", "none", "t")
    replayed = replay.answer(real, "shout", request)
    assert replayed == Completion('{"shout": "A"}', Usage(4, 2), "length", cached=False)
    assert not replay.save() and len(real.requests) == 1
    with pytest.raises(lmdsl.CassetteMismatch) as caught:
        replay.answer(real, "shout", request._replace(temperature=0.5))
    error = caught.value
    assert (error.test, error.function, error.cassette) == ("t", "shout", str(tmp_path / "c.json"))
    assert "temperature: recorded 0.0, this request 0.5" in error.difference
