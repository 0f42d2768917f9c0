"""`lmdsl run FILE.py:FUNCTION --input JSON`: typed JSON out, one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import lmdsl
from lmdsl.cli import EXIT_FAILED, EXIT_USAGE, main

MODULE = "lmdsl_cli_target"  # the file's stem; `lmdsl run` imports it under this name

HEADER = """\
from typing import Literal

from pydantic import BaseModel

import lmdsl
"""

SENTIMENT = """
def judge(request):
    good = "great" in request.messages[-1].content.lower()
    return {"sentiment": "positive" if good else "negative"}


@lmdsl.fuzzy(model=lmdsl.ScriptedModel(judge))
def sentiment(review: str) -> Literal["positive", "negative"]:
    \"\"\"Classify the sentiment of a movie review.\"\"\"


def helper(review: str) -> str:
    return review
"""

# A model that must not be called: it has no replies, and running out raises AssertionError.
NEVER_CALLED = """
@lmdsl.fuzzy(model=lmdsl.ScriptedModel([]))
def tally(label: str, count: int) -> int:
    \"\"\"Count things.\"\"\"
"""


def write_target(directory: Path, body: str) -> Path:
    path = directory / f"{MODULE}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


@pytest.fixture(autouse=True)
def _restore_import_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`lmdsl run` puts the target's directory on sys.path and the module in sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    sys.modules.pop(MODULE, None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code: int, out: str, err: str, *fragments: str) -> None:
    """Exit 2, nothing on stdout, and exactly one line on stderr naming what is wrong."""
    assert code == EXIT_USAGE == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("lmdsl: error: ")
    for fragment in fragments:
        assert fragment in err


# -- typed results --------------------------------------------------------------------------------


@pytest.mark.parametrize(("review", "expected"), [("Great film!", "positive"), ("Dull.", "negative")])
def test_a_literal_result_is_printed_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], review: str, expected: str
) -> None:
    path = write_target(tmp_path, SENTIMENT)
    code, out, err = run(capsys, f"{path}:sentiment", "--input", json.dumps({"review": review}))
    assert (code, err) == (0, "")
    assert json.loads(out) == expected
    assert lmdsl.history()[-1].inputs == {"review": review}


def test_an_int_result_is_printed_as_a_json_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(
        tmp_path,
        """
        def count(request):
            return {"count_words": len(request.messages[-1].content.removeprefix("text: ").split())}


        @lmdsl.fuzzy(model=lmdsl.ScriptedModel(count))
        def count_words(text: str) -> int:
            \"\"\"Count the words in the text.\"\"\"
        """,
    )
    code, out, err = run(capsys, f"{path}:count_words", "--input", '{"text": "one two three"}')
    assert (code, err) == (0, "")
    assert out.strip() == "3"
    assert json.loads(out) == 3


def test_a_pydantic_model_result_is_printed_as_a_json_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_target(
        tmp_path,
        """
        class Person(BaseModel):
            name: str
            age: int


        @lmdsl.fuzzy(model=lmdsl.ScriptedModel(lambda request: {"name": "Ada Lovelace", "age": 36}))
        def extract(text: str) -> Person:
            \"\"\"Extract the person.\"\"\"
        """,
    )
    code, out, err = run(capsys, f"{path}:extract", "--input", '{"text": "Ada Lovelace died at 36."}')
    assert (code, err) == (0, "")
    assert json.loads(out) == {"name": "Ada Lovelace", "age": 36}
    assert type(lmdsl.history()[-1].output).__name__ == "Person"


# -- inputs ----------------------------------------------------------------------------------------------

ECHO = """
class Person(BaseModel):
    name: str
    age: int


@lmdsl.fuzzy(model=lmdsl.ScriptedModel(lambda request: {"describe": request.messages[-1].content}))
def describe(person: Person, times: int, tags: list[str] = ["none"]) -> str:
    \"\"\"Describe the person.\"\"\"
"""


def test_inputs_are_validated_and_coerced_per_the_signature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(tmp_path, ECHO)
    inputs = {"person": {"name": "Ada", "age": "36"}, "times": "2", "tags": ["math"]}
    code, out, err = run(capsys, f"{path}:describe", "--input", json.dumps(inputs))
    assert (code, err) == (0, "")
    record = lmdsl.history()[-1]
    person = record.inputs["person"]
    assert type(person).__name__ == "Person" and (person.name, person.age) == ("Ada", 36)
    assert record.inputs["times"] == 2 and isinstance(record.inputs["times"], int)
    assert record.inputs["tags"] == ["math"]
    prompt = json.loads(out)  # the model echoed the prompt's input turn
    assert '{"name":"Ada","age":36}' in prompt
    assert "times: 2" in prompt


def test_a_missing_optional_input_takes_its_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(tmp_path, ECHO)
    code, _out, err = run(capsys, f"{path}:describe", "--input", '{"person": {"name": "Ada", "age": 36}, "times": 1}')
    assert (code, err) == (0, "")
    assert lmdsl.history()[-1].inputs["tags"] == ["none"]


def test_bad_json_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(tmp_path, NEVER_CALLED)
    code, out, err = run(capsys, f"{path}:tally", "--input", '{"label": ')
    assert_usage_error(code, out, err, "--input is not valid JSON")


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "list"), ('"label"', "str"), ("3", "int"), ("null", "NoneType")])
def test_json_that_is_not_an_object_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, kind: str
) -> None:
    path = write_target(tmp_path, NEVER_CALLED)
    code, out, err = run(capsys, f"{path}:tally", "--input", text)
    assert_usage_error(code, out, err, "must be a JSON object", kind)


@pytest.mark.parametrize(
    ("inputs", "fragments"),
    [
        pytest.param({"label": "apples"}, ["missing input field 'count'", "(int)"], id="missing"),
        pytest.param({"label": "apples", "count": "many"}, ["'count'", "valid integer"], id="wrong-type"),
        pytest.param({"label": 7, "count": 1}, ["'label'", "valid string"], id="wrong-type-str"),
        pytest.param(
            {"label": "a", "count": 1, "colour": "red"}, ["unknown input field 'colour'", "label, count"], id="unknown"
        ),
        pytest.param({}, ["'label'"], id="empty"),
    ],
)
def test_inputs_that_do_not_fit_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inputs: dict[str, object], fragments: list[str]
) -> None:
    path = write_target(tmp_path, NEVER_CALLED)
    code, out, err = run(capsys, f"{path}:tally", "--input", json.dumps(inputs))
    assert_usage_error(code, out, err, *fragments)


def test_the_default_input_is_an_empty_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(tmp_path, NEVER_CALLED)
    code, out, err = run(capsys, f"{path}:tally")
    assert_usage_error(code, out, err, "missing input field 'label'")


# -- targets ------------------------------------------------------------------------------------------------


def test_a_target_without_a_colon_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(tmp_path, SENTIMENT)
    code, out, err = run(capsys, str(path), "--input", '{"review": "x"}')
    assert_usage_error(code, out, err, "must look like FILE.py:FUNCTION")


@pytest.mark.parametrize("target", ["{path}:", ":sentiment"])
def test_a_target_with_an_empty_part_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    path = write_target(tmp_path, SENTIMENT)
    code, out, err = run(capsys, target.format(path=path), "--input", '{"review": "x"}')
    assert_usage_error(code, out, err, "must look like FILE.py:FUNCTION")


def test_a_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.py"
    code, out, err = run(capsys, f"{missing}:sentiment", "--input", '{"review": "x"}')
    assert_usage_error(code, out, err, "no such file", str(missing))


def test_a_directory_is_not_a_target_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, f"{tmp_path}:sentiment", "--input", '{"review": "x"}')
    assert_usage_error(code, out, err, "no such file")


def test_a_file_python_cannot_import_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text(HEADER + SENTIMENT)
    code, out, err = run(capsys, f"{text_file}:sentiment", "--input", '{"review": "x"}')
    assert_usage_error(code, out, err, "cannot import", "notes.txt")


def test_a_missing_name_is_a_usage_error_listing_the_fuzzy_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_target(tmp_path, SENTIMENT)
    code, out, err = run(capsys, f"{path}:sentimnet", "--input", '{"review": "x"}')
    assert_usage_error(code, out, err, "has no 'sentimnet'", "its fuzzy functions: sentiment")


@pytest.mark.parametrize("name", ["helper", "Literal", "BaseModel"])
def test_a_name_that_is_not_a_fuzzy_function_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = write_target(tmp_path, SENTIMENT)
    code, out, err = run(capsys, f"{path}:{name}", "--input", '{"review": "x"}')
    assert_usage_error(code, out, err, f":{name} is not a fuzzy function", "@lmdsl.fuzzy")


def test_a_missing_target_argument_is_an_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    assert exited.value.code == 2
    assert "target" in capsys.readouterr().err


# -- failures of the run itself ------------------------------------------------------------------------------


def test_an_output_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(
        tmp_path,
        """
        GARBAGE = lmdsl.ScriptedModel(lambda request: "I think it is positive, probably.")


        @lmdsl.fuzzy(model=GARBAGE)
        def sentiment(review: str) -> Literal["positive", "negative"]:
            \"\"\"Classify the sentiment of a movie review.\"\"\"
        """,
    )
    code, out, err = run(capsys, f"{path}:sentiment", "--input", '{"review": "Great!"}')
    assert code == EXIT_FAILED == 1
    assert out == ""
    assert err.startswith("lmdsl: OutputError: sentiment:")
    assert "3 attempt(s)" in err  # the default retries=2
    module = sys.modules[MODULE]
    assert len(module.GARBAGE.requests) == 3


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        (
            "gpt5",
            "unknown model string 'gpt5'; use one of: local, local:/path/model.gguf, anthropic:MODEL, openai:MODEL, "
            "openai:MODEL@http://HOST/v1\n",
        ),
        ("local:/no/such/model.gguf", "no model file at /no/such/model.gguf"),
        ("", None),
    ],
)
def test_a_model_string_that_names_no_usable_model_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, fragment: str | None
) -> None:
    path = write_target(tmp_path, NEVER_CALLED)
    code, out, err = run(capsys, f"{path}:tally", "--input", '{"label": "x", "count": 1}', "--model", model or "nope:x")
    assert_usage_error(code, out, err, "--model: ", fragment or "unknown model string 'nope:x'")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"label": ' + "[" * 60_000 + "]" * 60_000 + ', "count": 1}', "nested too deeply"),
        ('{"label": "x", "count": ' + "9" * 5000 + "}", "not valid JSON"),
        ('{"label": "\\ud800", "count": 1}', "Unicode"),
        ('{"label": "x", "count": 1, "\\udc00": 2}', "unknown input field"),
    ],
    ids=["deep", "long-integer", "lone-surrogate", "surrogate-key"],
)
def test_hostile_input_json_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    path = write_target(tmp_path, NEVER_CALLED)
    code, out, err = run(capsys, f"{path}:tally", "--input", text)
    assert_usage_error(code, out, err, fragment)


# -- options ----------------------------------------------------------------------------------------------------


def test_show_prompt_prints_the_prompt_and_reply_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(tmp_path, SENTIMENT)
    code, out, err = run(capsys, f"{path}:sentiment", "--input", '{"review": "Great acting."}', "--show-prompt")
    assert code == 0
    assert json.loads(out) == "positive"
    assert "[system]\nClassify the sentiment of a movie review." in err
    assert "[user]\nreview: Great acting." in err
    assert '{"sentiment": "positive"}' in err
    assert "sentiment on scripted" in err


def test_without_show_prompt_stderr_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_target(tmp_path, SENTIMENT)
    code, _out, err = run(capsys, f"{path}:sentiment", "--input", '{"review": "Great acting."}')
    assert (code, err) == (0, "")


# -- as a real command ----------------------------------------------------------------------------------------


def lmdsl_command(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmdsl.cli", "run", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_the_command_prints_the_result_and_exits_0(tmp_path: Path) -> None:
    path = write_target(tmp_path, SENTIMENT)
    result = lmdsl_command(tmp_path, f"{path.name}:sentiment", "--input", '{"review": "A great film."}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "positive"
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        pytest.param(["{file}:sentiment", "--input", "{not json"], "--input is not valid JSON", id="bad-json"),
        pytest.param(["{file}:sentiment", "--input", '{"text": "x"}'], "unknown input field 'text'", id="unknown"),
        pytest.param(["{file}:nothing"], "has no 'nothing'", id="missing-name"),
        pytest.param(["missing.py:sentiment"], "no such file", id="missing-file"),
    ],
)
def test_the_command_reports_bad_input_on_one_line_and_exits_2(tmp_path: Path, argv: list[str], fragment: str) -> None:
    path = write_target(tmp_path, SENTIMENT)
    result = lmdsl_command(tmp_path, *(a.replace("{file}", path.name) for a in argv))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("lmdsl: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_the_command_exits_1_on_an_output_error(tmp_path: Path) -> None:
    path = write_target(
        tmp_path,
        """
        @lmdsl.fuzzy(model=lmdsl.ScriptedModel(lambda request: "garbage"), retries=0)
        def sentiment(review: str) -> Literal["positive", "negative"]:
            \"\"\"Classify the sentiment of a movie review.\"\"\"
        """,
    )
    result = lmdsl_command(tmp_path, f"{path.name}:sentiment", "--input", '{"review": "x"}')
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("lmdsl: OutputError: sentiment:")
    assert "1 attempt(s)" in result.stderr
    assert "Traceback" not in result.stderr
