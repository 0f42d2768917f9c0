"""`lmdsl check` runs a file's top-level code, but never calls a model and never writes a file:
what that code tries is refused and becomes a finding at its top-level line (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import lmdsl
import lmdsl.config
from lmdsl.cli import main

GUARD_IT = 'guard it with `if __name__ == "__main__":`  [lmdsl-top-level]'

PROBE = "lmdsl_check_probe"  # a module the checked files report to: what reached their scripted models

HEADER = f"""\
import os
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

import lmdsl
import {PROBE}

def answer(request):
    {PROBE}.requests.append(request)
    return {{"sentiment": "positive"}}

def scripted():
    return lmdsl.ScriptedModel(answer)
"""


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = types.ModuleType(PROBE)
    module.requests = []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, PROBE, module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield module


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def line_of(path: Path, marker: str) -> int:
    """The number of the line holding `# marker`."""
    lines = path.read_text().splitlines()
    return next(number for number, text in enumerate(lines, 1) if f"# {marker}" in text)


def check(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, list[str]]:
    code = main(["check", *map(str, paths)])
    return code, capsys.readouterr().out.splitlines()


def test_no_top_level_model_call_reaches_a_model_however_the_file_chooses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], probe: types.ModuleType
) -> None:
    app = write(
        tmp_path,
        "app.py",
        """
        lmdsl.configure(model=scripted())  # the process default: beneath the check's guard

        @lmdsl.fuzzy
        def sentiment(text: str) -> str:
            \"\"\"Classify the sentiment.\"\"\"

        @lmdsl.fuzzy(model=scripted())  # its own model: beaten by the guard too
        def pinned(text: str) -> str:
            \"\"\"Classify the sentiment.\"\"\"

        @lmdsl.program
        def classify(text: str) -> str:
            return sentiment(text)

        def exact(example, prediction):
            return prediction == example.label

        rows = [lmdsl.Example(text="good", label="positive")] * 3
        result = lmdsl.evaluate(classify, rows, exact, progress=False)  # evaluate
        try:
            pinned("pinned")  # pinned
        except lmdsl.LMDSLError:
            pass
        with lmdsl.using(model=scripted()):
            try:
                sentiment("inside the file's own using block")  # using
            except lmdsl.LMDSLError:
                pass

        def in_a_thread():
            try:
                pinned("a thread that does not copy the context")
            except lmdsl.LMDSLError:
                pass

        worker = threading.Thread(target=in_a_thread)
        worker.start(); worker.join()  # thread (the line the checking thread is on meanwhile)
        sentiment("the last one, not caught")  # last
        raise SystemExit("not reached: the refusal ends the file")
        """,
    )
    default = lmdsl.config.settings()

    code, out = check(capsys, app)

    assert probe.requests == []
    assert code == 1
    assert out == [
        f"{app}:{line_of(app, 'evaluate')}: error: top-level code calls the model (through sentiment): {GUARD_IT}",
        f"{app}:{line_of(app, 'pinned')}: error: top-level code calls the model (through pinned): {GUARD_IT}",
        f"{app}:{line_of(app, 'using')}: error: top-level code calls the model (through sentiment): {GUARD_IT}",
        f"{app}:{line_of(app, 'thread')}: error: top-level code calls the model (through a fuzzy function): {GUARD_IT}",
        f"{app}:{line_of(app, 'last')}: error: top-level code calls the model (through sentiment): {GUARD_IT}",
        "Found 5 errors in 1 file (checked 1 source file)",
    ]
    assert lmdsl.config.settings() is default  # the file's configure(...) ended with the check


def test_top_level_code_changes_no_file_outside_a_temporary_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], probe: types.ModuleType
) -> None:
    (tmp_path / "rows.csv").write_text("the user's results\n")
    (tmp_path / "keep.txt").write_text("keep me\n")
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    app = write(
        tmp_path,
        "app.py",
        """
        import helper  # imported: no bytecode is written for it

        here = Path(__file__).parent
        def attempt(change):
            try:
                change()
            except PermissionError:  # what a refused change raises: the finding is made all the same
                pass

        attempt(lambda: open(here / "rows.csv", "w"))  # open-write
        attempt(lambda: (here / "new.txt").write_text("x"))  # write-text
        attempt(lambda: open(here / "rows.csv", "a"))  # append
        attempt(lambda: os.remove(here / "keep.txt"))  # remove
        attempt(lambda: os.replace(here / "keep.txt", here / "moved.txt"))  # rename
        attempt(lambda: shutil.move(str(here / "keep.txt"), str(here / "elsewhere.txt")))  # move
        attempt(lambda: shutil.copyfile(here / "keep.txt", here / "copy.txt"))  # copy
        attempt(lambda: shutil.rmtree(here))  # rmtree
        attempt(lambda: sqlite3.connect(here / "db.sqlite3"))  # sqlite
        attempt(lambda: os.close(os.open(here / "flags.txt", os.O_WRONLY | os.O_CREAT)))  # os-open

        # what changes nothing of the user's is allowed
        os.makedirs(here / "cache-folder", exist_ok=True)  # an empty folder is let be
        os.makedirs(here / ".tool-cache", exist_ok=True)
        (here / ".tool-cache" / "entry").write_text("a tool's cache, as hypothesis keeps on import")
        with open(os.devnull, "w") as sink:
            sink.write("nothing")
        with tempfile.TemporaryDirectory() as scratch:
            Path(scratch, "a.txt").write_text("scratch")
            shutil.move(str(Path(scratch, "a.txt")), str(Path(scratch, "b.txt")))
        with tempfile.NamedTemporaryFile("w") as handle:
            handle.write("scratch")
        sqlite3.connect(":memory:").close()
        open(here / "rows.csv").read()
        """,
    )
    before = sorted([*(p.name for p in tmp_path.iterdir()), ".tool-cache", "cache-folder"])  # (folders are made)

    code, out = check(capsys, app)

    assert code == 1
    expected = [
        ("open-write", "writes", tmp_path / "rows.csv"),
        ("write-text", "writes", tmp_path / "new.txt"),
        ("append", "writes", tmp_path / "rows.csv"),
        ("remove", "deletes", tmp_path / "keep.txt"),
        ("rename", "moves", tmp_path / "keep.txt"),
        ("move", "moves", tmp_path / "keep.txt"),
        ("copy", "copies onto", tmp_path / "copy.txt"),
        ("rmtree", "deletes", tmp_path),
        ("sqlite", "opens the database", tmp_path / "db.sqlite3"),
        ("os-open", "writes", tmp_path / "flags.txt"),
    ]
    assert out == [
        *(
            f"{app}:{line_of(app, marker)}: error: top-level code {verb} {path}: {GUARD_IT}"
            for marker, verb, path in expected
        ),
        f"Found {len(expected)} errors in 1 file (checked 1 source file)",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no __pycache__ either
    assert (tmp_path / "rows.csv").read_text() == "the user's results\n"
    assert (tmp_path / "keep.txt").read_text() == "keep me\n"


def test_a_model_call_in_a_module_the_file_imports_is_reported_at_that_modules_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], probe: types.ModuleType
) -> None:
    shared = write(
        tmp_path,
        "shared.py",
        """
        @lmdsl.fuzzy(model=scripted())
        def sentiment(text: str) -> str:
            \"\"\"Classify the sentiment.\"\"\"

        WARM = sentiment("warm-up")  # warm-up
        """,
    )
    app = write(tmp_path, "app.py", "import shared\n")

    code, out = check(capsys, tmp_path)

    assert probe.requests == []
    assert code == 1
    assert out == [  # reported once, though both files ran it
        f"{shared}:{line_of(shared, 'warm-up')}: error: top-level code calls the model (through sentiment): {GUARD_IT}",
        "Found 1 error in 1 file (checked 2 source files)",
    ]
    assert app.exists()


def test_after_a_check_models_answer_and_files_are_written_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], probe: types.ModuleType
) -> None:
    app = write(tmp_path, "app.py", 'open(Path(__file__).with_name("out.txt"), "w")\n')
    assert check(capsys, app)[0] == 1

    (tmp_path / "after.txt").write_text("written")  # the audit hook stays, and does nothing
    model = lmdsl.ScriptedModel([{"tag": "fine"}])

    @lmdsl.fuzzy(model=model)
    def tag(text: str) -> str:
        """Tag it."""

    assert tag("x") == "fine" and len(model.requests) == 1
    assert not (tmp_path / "out.txt").exists()


def test_importing_lmdsl_and_its_command_line_adds_no_audit_hook() -> None:
    """Only running a check does: the hook is added by the first `check_files`."""
    script = "import lmdsl, lmdsl.cli, lmdsl.cli.check as check; print(check._hooked)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env={**os.environ}
    )
    assert result.stdout.strip() == "False"
