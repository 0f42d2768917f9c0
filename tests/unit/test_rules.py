"""The static rules at decoration time (the same table and messages as the mypy plugin),
and `lmdsl check`, which lists every broken rule in files without running them."""

# This file breaks the rules on purpose; mypy's plugin would report each mistake.
# mypy: disable-error-code="lmdsl-docstring, lmdsl-signature, lmdsl-serializable, lmdsl-wiring, no-untyped-def"

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
from pydantic import BaseModel

import lmdsl
from lmdsl import rules
from lmdsl.cli import main
from lmdsl.serializable import accepts


class Answer(BaseModel):
    text: str


@lmdsl.fuzzy
def answer(question: str, context: str) -> Answer:
    """Answer the question from the context."""


def test_every_problem_of_a_definition_is_carried_with_its_code() -> None:
    def bad(text, *rest: str, data: set[int]):
        pass

    with pytest.raises(lmdsl.SignatureError) as caught:
        lmdsl.fuzzy(bad)
    codes = [problem.code for problem in caught.value.problems]
    assert codes == [rules.DOCSTRING, rules.SIGNATURE, rules.SIGNATURE, rules.SERIALIZABLE, rules.SIGNATURE]
    assert caught.value.code == rules.DOCSTRING and "needs a docstring" in str(caught.value)


def test_a_check_whose_first_parameter_cannot_take_the_output_is_rejected() -> None:
    def polite(output: str) -> bool:
        return "sorry" in output

    with pytest.raises(lmdsl.SignatureError, match="first parameter takes str, but answer returns Answer") as caught:
        answer.ensure(polite)
    assert caught.value.code == rules.WIRING


def test_a_check_reports_both_a_wrong_output_type_and_a_misspelled_input() -> None:
    def grounded(output: int, *, contxt: str) -> bool:
        return True

    with pytest.raises(lmdsl.SignatureError) as caught:
        answer.ensure(grounded)
    messages = [str(p) for p in caught.value.problems]
    assert len(messages) == 2 and 'did you mean "context"?' in messages[1]


def test_optimize_checks_the_metric_and_the_examples_against_the_program() -> None:
    def by_length(example: lmdsl.Example, prediction: int) -> bool:
        return prediction == len(example.text)

    with pytest.raises(lmdsl.SignatureError) as caught:

        @lmdsl.optimize(trainset=[lmdsl.Example(question="q", contxt="c")], metric=by_length)
        @lmdsl.program
        def respond(question: str, context: str) -> str:
            return answer(question, context).text

    problems = [str(p) for p in caught.value.problems]
    assert "takes int, but respond returns str" in problems[0]
    assert "example 1 of respond has no field 'context'" in problems[1] and 'did you mean "contxt"?' in problems[1]
    assert {p.code for p in caught.value.problems} == {rules.WIRING}


def test_optimize_accepts_a_metric_that_takes_a_wider_type_and_defaults_that_examples_omit() -> None:
    def exact(example: lmdsl.Example, prediction: str | None) -> bool:
        return bool(prediction == example.label)

    @lmdsl.optimize(trainset=[lmdsl.Example(question="q", label="x")], metric=exact)
    @lmdsl.program
    def respond(question: str, context: str = "") -> Literal["x", "y"]:
        return "x"

    assert respond.compile_config is not None


@pytest.mark.parametrize(
    ("parameter", "value", "expected"),
    [
        (str, str, True),
        (str, int, False),
        (float, int, True),
        (int, bool, True),
        (bool, int, False),
        (str, Literal["a", "b"], True),
        (int, Literal["a"], False),
        (Optional[str], str, True),
        (str, Optional[str], False),
        (object, Answer, True),
        (Any, int, True),
        (BaseModel, Answer, True),
        (Answer, str, False),
        (list[str], list[int], True),  # generics: not judged, accepted
    ],
)
def test_accepts_is_certain_when_it_rejects(parameter: Any, value: Any, expected: bool) -> None:
    assert accepts(parameter, value) is expected


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_lmdsl_check_lists_every_problem_in_a_folder_and_runs_no_main(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path,
        "good.py",
        '''
        import lmdsl

        @lmdsl.fuzzy
        def tag(text: str) -> list[str]:
            """Tag the text."""

        if __name__ == "__main__":
            raise SystemExit("main ran")
    ''',
    )
    write(
        tmp_path,
        "bad.py",
        '''
        import lmdsl

        @lmdsl.fuzzy
        def tag(text: set[str]) -> str:
            ...

        @tag.ensure
        def short(output: str, *, txt: str) -> bool:
            return True

        @lmdsl.fuzzy
        def fine(text: str) -> str:
            """Still checked after the broken one."""

        @fine.ensure
        def also(output: int) -> bool:
            return True
    ''',
    )
    write(tmp_path, "broken.py", "import this_module_does_not_exist\n")
    (tmp_path / ".hidden").mkdir()
    write(tmp_path / ".hidden", "skipped.py", "raise SystemExit('hidden folders are skipped')\n")

    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert f"{tmp_path / 'bad.py'}:5: error: tag: a fuzzy function needs a docstring" in lines[0]
    assert lines[0].endswith("[lmdsl-docstring]") and lines[1].endswith("[lmdsl-serializable]")
    assert "check also of fine: its first parameter takes int, but fine returns str" in out
    assert "broken.py:1: error: cannot be loaded: ModuleNotFoundError" in out
    assert "main ran" not in out and "hidden" not in out
    assert out.strip().endswith("Found 4 errors in 2 files (checked 3 source files)")


def test_lmdsl_check_of_a_clean_file_and_of_a_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.py", 'import lmdsl\n\n@lmdsl.fuzzy\ndef f(x: str) -> str:\n    """Do."""\n')
    assert main(["check", str(good)]) == 0
    assert "Success: no issues found in 1 source file" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "nope.py")]) == 2
