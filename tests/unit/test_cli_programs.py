"""`lmdsl eval` checks its dev set against the program and the metric before running anything, and
`lmdsl run` runs programs as well as fuzzy functions (issue 16)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmdsl.cli import EXIT_USAGE, main

APP = textwrap.dedent(
    '''
    import lmdsl
    from pydantic import BaseModel

    ASKED = []

    def respond(request):
        ASKED.append(request)
        return {"sentiment": "negative" if "bad" in request.messages[-1].content else "positive"}

    @lmdsl.fuzzy(model=lmdsl.ScriptedModel(respond))
    def sentiment(text: str) -> str:
        """Classify the sentiment."""

    class Verdict(BaseModel):
        label: str
        stars: int

    @lmdsl.program
    def classify(text: str, stars: int = 3) -> Verdict:
        return Verdict(label=sentiment(text), stars=stars)

    def exact(example, prediction):
        return prediction.label == example.label

    def helper(text: str) -> str:
        return text
    '''
)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    path = tmp_path / "cli_programs_app.py"
    path.write_text(APP)
    yield path
    sys.modules.pop("cli_programs_app", None)


def one_line_usage_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("lmdsl: error: ") and err.count("\n") == 1, err
    return err.strip()


def eval_(app: Path, devset: Path) -> int:
    return main(["eval", f"{app}:classify", "--devset", str(devset), "--metric", f"{app}:exact"])


def asked(app: Path) -> int:
    return len(sys.modules["cli_programs_app"].ASKED)


# -- lmdsl eval: the dev set is checked first ---------------------------------------------------------------


def test_eval_of_a_devset_without_the_programs_input_is_a_usage_error_naming_the_example_and_field(
    app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devset = tmp_path / "dev.jsonl"
    devset.write_text('{"text": "good", "label": "positive"}\n{"review": "bad", "label": "negative"}\n')
    error = one_line_usage_error(capsys, eval_(app, devset))
    assert error == (
        f"lmdsl: error: {devset}: example 2: missing input field 'text'; classify takes text, stars; "
        "its fields: review, label"
    )
    assert asked(app) == 0  # nothing ran, not even the first example


def test_eval_of_a_devset_whose_input_does_not_fit_its_type_is_a_usage_error(
    app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devset = tmp_path / "dev.csv"
    devset.write_text("text,stars,label\ngood,4,positive\nbad,many,negative\n")  # CSV: "4" is coerced, "many" not
    error = one_line_usage_error(capsys, eval_(app, devset))
    assert error.startswith(f"lmdsl: error: {devset}: example 2: input field 'stars': ")
    assert asked(app) == 0


def test_eval_of_a_devset_without_a_field_the_metric_reads_is_a_usage_error(
    app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devset = tmp_path / "dev.jsonl"
    devset.write_text('{"text": "good", "gold": "positive"}\n')
    error = one_line_usage_error(capsys, eval_(app, devset))
    assert error == (
        f"lmdsl: error: {devset}: example 1 has no field 'label', which the metric exact reads (example.label); "
        "its fields: text, gold"
    )
    assert asked(app) == 0


def test_eval_of_a_devset_that_fits_runs(app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    devset = tmp_path / "dev.jsonl"
    devset.write_text('{"text": "good", "label": "positive"}\n{"text": "bad", "stars": 1, "label": "negative"}\n')
    assert eval_(app, devset) == 0
    assert capsys.readouterr().out.startswith("evaluate classify: score 100.0 on 2 example(s), 0 error(s);")


# -- lmdsl run: programs too ------------------------------------------------------------------------------------


def test_run_runs_a_program_on_inputs_by_name_and_prints_its_output_as_json(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{app}:classify", "--input", '{"text": "a bad film", "stars": "2"}']) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"label": "negative", "stars": 2}
    assert out == '{\n  "label": "negative",\n  "stars": 2\n}\n' and err == ""


def test_run_of_a_program_shows_every_prompt_of_the_run_when_asked(
    app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", f"{app}:classify", "--input", '{"text": "fine"}', "--show-prompt"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"label": "positive", "stars": 3}
    assert err.startswith("── sentiment on scripted") and "[user]\ntext: fine" in err


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ('{"txt": "good"}', "unknown input field 'txt'; classify takes text, stars"),
        ("{}", "missing input field 'text'; classify takes text, stars"),
        ('{"text": "good", "stars": "many"}', "input field 'stars': "),
        ("[1]", "--input must be a JSON object of named inputs, not list"),
    ],
)
def test_run_of_a_program_checks_its_inputs_first(
    app: Path, capsys: pytest.CaptureFixture[str], given: str, fragment: str
) -> None:
    error = one_line_usage_error(capsys, main(["run", f"{app}:classify", "--input", given]))
    assert fragment in error
    assert asked(app) == 0


def test_run_names_the_fuzzy_functions_and_programs_of_a_file(app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = one_line_usage_error(capsys, main(["run", f"{app}:clasify"]))
    assert error.endswith("has no 'clasify'; its fuzzy functions: sentiment; its programs: classify")
    error = one_line_usage_error(capsys, main(["run", f"{app}:helper"]))
    assert error.endswith(
        ":helper is not a fuzzy function or a program (decorate it with @lmdsl.fuzzy or @lmdsl.program)"
    )
