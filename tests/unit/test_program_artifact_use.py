"""`use_artifact`: a compiled parameter file is loaded once, before the first run; a missing one
is logged, a stale one warns (or raises) and the program runs from its docstrings. A relative
path is relative to the file that names it."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lmdsl
from lmdsl.program import Program

SUMMARISE_SIGNATURE = "07d76c096fe8cf2d"
DOCSTRING = "Summarise the text in one line."

UNDER_MUTMUT = pytest.mark.skipif(
    "MUTANT_UNDER_TEST" in os.environ, reason="mutmut's trampolines add frames between lmdsl and the caller"
)


@lmdsl.fuzzy
def summarise(text: str) -> str:
    """Summarise the text in one line."""


def digest_text(text: str) -> str:
    return summarise(text=text)


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    summarise.reset_params()


@pytest.fixture
def model() -> Iterator[lmdsl.ScriptedModel]:
    scripted = lmdsl.ScriptedModel(lambda request: {"summarise": "short"})
    with lmdsl.using(model=scripted):
        yield scripted


def write_artifact(path: Path, instructions: str, signature: str = SUMMARISE_SIGNATURE) -> Path:
    data: dict[str, Any] = {
        "format": "lmdsl-params/1",
        "lmdsl": "0.1.0",
        "program": "digest_text",
        "functions": {"summarise": {"signature": signature, "instructions": instructions, "demos": []}},
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def instructions_sent(model: lmdsl.ScriptedModel) -> list[str]:
    return [request.messages[0].content.split("\n\n")[0] for request in model.requests]


def test_a_new_program_has_no_artifact_and_no_compile_configuration(caplog: pytest.LogCaptureFixture) -> None:
    program = Program(digest_text)
    assert program.artifact is None
    assert program.compile_config is None
    assert program.name == "digest_text"
    with caplog.at_level(logging.DEBUG, logger="lmdsl"):
        program.reset_params(reload_artifact=True)
        with lmdsl.using(model=lmdsl.ScriptedModel([{"summarise": "s"}])):
            assert program("a long text") == "s"
    assert caplog.records == []


def test_a_missing_artifact_is_logged_once_and_the_program_runs_uncompiled(
    tmp_path: Path, model: lmdsl.ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    program = Program(digest_text)
    path = tmp_path / "digest.json"
    program.use_artifact(str(path))
    assert program.artifact == path
    with caplog.at_level(logging.INFO, logger="lmdsl"):
        program("one")
        program("two")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("lmdsl", logging.INFO, f"digest_text: no artifact at {path} yet; running uncompiled")
    ]
    assert instructions_sent(model) == [DOCSTRING, DOCSTRING]


def test_an_artifact_is_loaded_before_the_first_run_and_not_read_again(
    tmp_path: Path, model: lmdsl.ScriptedModel
) -> None:
    program = Program(digest_text)
    path = write_artifact(tmp_path / "digest.json", "Summarise tersely.")
    program.use_artifact(path)
    assert summarise.params.instructions == DOCSTRING  # nothing is read until the program runs
    program("one")
    write_artifact(path, "Summarise at length.")
    program.invoke({"text": "two"})
    assert instructions_sent(model) == ["Summarise tersely.", "Summarise tersely."]
    program.reset_params(reload_artifact=True)
    assert summarise.params.instructions == DOCSTRING
    program.run("three")
    assert instructions_sent(model)[-1] == "Summarise at length."


def test_a_stale_artifact_warns_once_without_logging_it_too_and_runs_from_the_docstrings(
    tmp_path: Path, model: lmdsl.ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    program = Program(digest_text)
    path = write_artifact(tmp_path / "digest.json", "Summarise tersely.", signature="0000000000000000")
    program.use_artifact(path)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="lmdsl"):
        warnings.simplefilter("always")
        result = program.run("one")
        program.run("two")
    text = (
        f"digest_text runs uncompiled: {path}: fuzzy function 'summarise' changed since the file was written "
        "(its docstring, annotations or field descriptions differ) (run `lmdsl compile` again)"
    )
    assert [(w.category, str(w.message)) for w in caught] == [(lmdsl.StaleArtifactWarning, text)]
    assert caplog.records == []  # said once, as a warning: logging would print it a second time
    assert result.output == "short"
    assert instructions_sent(model) == [DOCSTRING, DOCSTRING]


@UNDER_MUTMUT
def test_a_stale_artifact_warning_points_at_the_line_calling_the_program(
    tmp_path: Path, model: lmdsl.ScriptedModel
) -> None:
    program = Program(digest_text)
    program.use_artifact(write_artifact(tmp_path / "digest.json", "x", signature="0000000000000000"))
    with pytest.warns(lmdsl.StaleArtifactWarning) as caught:
        program("one")
    with pytest.warns(lmdsl.StaleArtifactWarning) as through_run:
        program.reset_params(reload_artifact=True)
        program.run("two")
    assert [caught[0].filename, through_run[0].filename] == [__file__, __file__]


def test_a_stale_artifact_raises_when_asked_and_changes_nothing(tmp_path: Path, model: lmdsl.ScriptedModel) -> None:
    program = Program(digest_text)
    path = write_artifact(tmp_path / "digest.json", "Summarise tersely.", signature="0000000000000000")
    program.use_artifact(path, on_stale="raise")
    with pytest.raises(lmdsl.ArtifactError) as caught:
        program("one")
    assert str(caught.value) == (
        f"{path}: fuzzy function 'summarise' changed since the file was written "
        "(its docstring, annotations or field descriptions differ)"
    )
    assert summarise.params.instructions == DOCSTRING
    assert model.requests == []


def test_only_use_artifact_schedules_a_load_the_attribute_just_reports_the_path(
    tmp_path: Path, model: lmdsl.ScriptedModel
) -> None:
    program = Program(digest_text)
    program("zero")
    program.artifact = write_artifact(tmp_path / "digest.json", "Summarise tersely.")
    program("one")
    assert summarise.params.instructions == DOCSTRING
    program.use_artifact(program.artifact)
    program("two")
    assert instructions_sent(model) == [DOCSTRING, DOCSTRING, "Summarise tersely."]


@UNDER_MUTMUT
def test_suggest_and_a_soft_check_warn_at_the_users_line(model: lmdsl.ScriptedModel) -> None:
    @lmdsl.program(max_backtracks=0)
    def hinted(text: str) -> str:
        lmdsl.suggest(False, "keep it short")
        return text

    with pytest.warns(lmdsl.AssertionWarning) as caught:
        hinted("x")
    assert caught[0].filename == __file__


# -- a relative artifact path is the declaring file's, not the current directory's (issue 16) -------------

APP = '''
import lmdsl

@lmdsl.fuzzy
def summarise(text: str) -> str:
    """Summarise the text in one line."""

def exact(example, prediction):
    return True

@lmdsl.optimize(trainset=[lmdsl.Example(text="a", label="b")], metric=exact, artifact="digest.lmdsl.json")
@lmdsl.program
def digest(text: str) -> str:
    return summarise(text)

@lmdsl.program
def loose(text: str) -> str:
    return summarise(text)

loose.use_artifact("loose.lmdsl.json")
loose_absolute = lmdsl.program(loose.__wrapped__)
loose_absolute.use_artifact(ABSOLUTE)
'''


def app_module(folder: Path, absolute: Path) -> dict[str, Any]:
    import runpy

    folder.mkdir(exist_ok=True)
    path = folder / "app.py"
    path.write_text(APP.replace("ABSOLUTE", repr(str(absolute))))
    return runpy.run_path(str(path))


def an_artifact(path: Path, program: str, function: Any, instructions: str) -> None:
    data = {
        "format": "lmdsl-params/1",
        "lmdsl": "0.1.0",
        "program": program,
        "functions": {
            "summarise": {"signature": function.signature.fingerprint, "instructions": instructions, "demos": []}
        },
    }
    path.write_text(json.dumps(data), encoding="utf-8")


def test_relative_artifact_paths_are_found_beside_the_file_that_names_them_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    app = app_module(project, tmp_path / "absolute.json")
    assert app["digest"].compile_config.artifact == project / "digest.lmdsl.json"  # where `lmdsl compile` writes
    assert app["digest"].artifact == project / "digest.lmdsl.json"
    assert app["loose"].artifact == project / "loose.lmdsl.json"
    assert app["loose_absolute"].artifact == tmp_path / "absolute.json"  # an absolute path as it is

    an_artifact(project / "digest.lmdsl.json", "digest", app["summarise"], "Summarise tersely.")
    model = lmdsl.ScriptedModel(lambda request: {"summarise": "short"})
    with lmdsl.using(model=model):
        app["digest"]("one")  # run from another directory: compiled all the same
    assert instructions_sent(model) == ["Summarise tersely."]


def test_a_relative_artifact_path_named_outside_any_file_stays_relative_to_the_current_directory() -> None:
    program = Program(digest_text)
    namespace = {"program": program}
    exec(compile("program.use_artifact('digest.json')", "<stdin>", "exec"), namespace)
    assert program.artifact == Path("digest.json")


# -- a stale artifact's warning: said once, at the user's code (issue 16) ---------------------------------


def test_a_stale_artifact_met_in_evaluates_worker_threads_warns_once_at_the_users_line(
    tmp_path: Path, model: lmdsl.ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    program = Program(digest_text)
    program.use_artifact(write_artifact(tmp_path / "digest.json", "x", signature="0000000000000000"))
    examples = [lmdsl.Example(text=str(i)) for i in range(4)]
    with pytest.warns(lmdsl.StaleArtifactWarning) as caught, caplog.at_level(logging.DEBUG, logger="lmdsl"):
        lmdsl.evaluate(program, examples, lambda example, prediction: True, threads=4, progress=False)  # here
    assert len(caught) == 1
    assert (caught[0].filename, caught[0].lineno) == (__file__, line_with("# here"))  # not threading's, not lmdsl's
    assert caplog.records == []


def test_a_stale_artifact_met_under_lmdsl_eval_warns_once_at_the_programs_definition(tmp_path: Path) -> None:
    """Under `lmdsl eval` only the command's own code calls the program: the warning points at
    the program's definition, and is printed once (not once more through logging)."""
    import subprocess
    import sys

    app = tmp_path / "stale_app.py"
    app.write_text(
        "import lmdsl\n\n"
        "@lmdsl.fuzzy(model=lmdsl.ScriptedModel(lambda request: {'summarise': 's'}))\n"
        "def summarise(text: str) -> str:\n"
        '    """Summarise the text in one line."""\n\n'
        "@lmdsl.program\n"
        "def digest(text: str) -> str:\n"
        "    return summarise(text)\n\n"
        "def anything(example, prediction):\n"
        "    return True\n\n"
        'digest.use_artifact("digest.json")\n'
    )
    write_artifact(tmp_path / "digest.json", "x", signature="0000000000000000")
    devset = tmp_path / "dev.jsonl"
    devset.write_text('{"text": "a"}\n{"text": "b"}\n')
    command = [sys.executable, "-m", "lmdsl.cli", "eval", f"{app}:digest", "--devset", str(devset)]
    result = subprocess.run(
        [*command, "--metric", f"{app}:anything"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("runs uncompiled") == 1  # (the progress lines of other threads may interleave)
    assert f"{app}:7: StaleArtifactWarning: digest runs uncompiled: " in result.stderr


def line_with(marker: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(number for number, text in enumerate(lines, 1) if text.rstrip().endswith(marker))


SOFT_CHECK_SCRIPT = """
import lmdsl

@lmdsl.program(max_backtracks=0)
def hinted(text: str) -> str:
    lmdsl.suggest(False, "keep it short")
    return text

print(hinted("x"))
"""


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_a_warning_from_code_run_by_python_c_or_from_stdin_is_shown_not_an_import_error(how: str) -> None:
    """Such code's loader has no source: passing its globals to `warnings.warn_explicit` made the
    warning itself raise ImportError ('__main__' is not a built-in module)."""
    import subprocess
    import sys

    command = [sys.executable, "-c", SOFT_CHECK_SCRIPT] if how == "-c" else [sys.executable, "-"]
    result = subprocess.run(
        command, input=None if how == "-c" else SOFT_CHECK_SCRIPT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "x\n"
    where = "<string>" if how == "-c" else "<stdin>"
    assert f"{where}:6: AssertionWarning: " in result.stderr and "keep it short" in result.stderr
