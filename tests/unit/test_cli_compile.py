"""`lmdsl compile`, `lmdsl eval` and `lmdsl inspect` on a scripted program."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from lmdsl.cli import main

PROGRAM = textwrap.dedent(
    '''
    # mypy: disable-error-code="empty-body"
    from typing import Literal
    import lmdsl
    from lmdsl.data import Example
    from lmdsl.compiler import RandomSearch

    def respond(request):
        text = request.messages[request.prefix_length].content.split(": ", 1)[1]
        demos = sum(1 for m in request.messages[: request.prefix_length] if m.role == "assistant")
        if demos < 2:
            return {"sentiment": "positive"}
        return {"sentiment": "negative" if "bad" in text else "positive"}

    @lmdsl.fuzzy(model=lmdsl.ScriptedModel(respond))
    def sentiment(text: str) -> Literal["positive", "negative"]:
        """Classify the sentiment."""

    def exact(example, prediction):
        return prediction == example.label

    TRAIN = [Example(text=t, label=l) for t, l in [("good", "positive"), ("bad", "negative"), ("nice", "positive"), ("so bad", "negative")]]

    @lmdsl.optimize(trainset=TRAIN, metric=exact, optimizer=RandomSearch(candidates=3), artifact=ARTIFACT)
    @lmdsl.program
    def classify(text: str) -> str:
        return sentiment(text)
    '''
)


def table_row(out: str, label: str) -> list[str]:
    """The cells of the before/after table's row whose first cell is `label`."""
    for line in out.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line) if cell.strip()]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no {label!r} row in:\n{out}")


@pytest.fixture
def program_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(PROGRAM.replace("ARTIFACT", repr(str(tmp_path / "classify.lmdsl.json"))))
    return path


def test_compile_prints_before_and_after_and_writes_the_artifact(
    program_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", f"{program_file}:classify"]) == 0
    out = capsys.readouterr().out
    assert table_row(out, "uncompiled")[1] == "50.0"  # score column of each row, not "somewhere"
    assert table_row(out, "compiled")[1] == "100.0"
    artifact = program_file.parent / "classify.lmdsl.json"
    data = json.loads(artifact.read_text())
    assert data["scores"]["compiled"] == 100.0 and data["program"] == "classify"

    assert main(["inspect", str(artifact)]) == 0
    shown = capsys.readouterr().out
    assert "== sentiment" in shown and '"text": "good"' in shown

    assert main(["inspect", str(artifact), "--program", f"{program_file}:classify"]) == 0
    assert "[system]\nClassify the sentiment." in capsys.readouterr().out


def test_compiling_again_starts_from_the_uncompiled_program_and_then_uses_the_new_artifact(
    program_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import runpy

    assert main(["compile", f"{program_file}:classify"]) == 0
    first = capsys.readouterr().out
    assert main(["compile", f"{program_file}:classify"]) == 0
    second = capsys.readouterr().out
    assert table_row(first, "uncompiled")[1] == table_row(second, "uncompiled")[1] == "50.0"

    module = runpy.run_path(str(program_file))
    assert module["classify"]("so bad") == "negative"  # the artifact's demos are in use


def test_eval_scores_a_devset_file_and_writes_rows(
    program_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devset = tmp_path / "dev.jsonl"
    devset.write_text('{"text": "good", "label": "positive"}\n{"text": "bad", "label": "negative"}\n')
    rows = tmp_path / "rows.csv"
    assert main(["eval", f"{program_file}:classify", "--devset", str(devset), "--output", str(rows)]) == 0
    assert capsys.readouterr().out.startswith("evaluate classify: score 50.0 on 2 example(s), 0 error(s);")
    assert rows.read_text().count("\n") == 3  # a header and one row per example


def test_inspect_of_a_broken_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "lmdsl-params/1", "progr')
    assert main(["inspect", str(broken)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_compile_of_a_program_without_optimize_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.py"
    path.write_text("import lmdsl\n@lmdsl.program\ndef p(x: str) -> str:\n    return x\n")
    assert main(["compile", f"{path}:p"]) == 2
    assert "@lmdsl.optimize" in capsys.readouterr().err


def test_eval_of_a_program_without_optimize_needs_a_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plain.py"
    path.write_text("import lmdsl\n@lmdsl.program\ndef p(x: str) -> str:\n    return x\n")
    devset = tmp_path / "dev.jsonl"
    devset.write_text('{"x": "a"}\n')
    assert main(["eval", f"{path}:p", "--devset", str(devset)]) == 2
    assert "give --metric FILE.py:NAME, or decorate the program with @lmdsl.optimize(metric=...)" in (
        capsys.readouterr().err
    )


def test_compile_storage_puts_mipros_study_where_it_says(
    program_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    optuna = pytest.importorskip("optuna", reason="MIPRO needs optuna (./dev test installs it)")
    mipro = program_file.parent / "mipro_app.py"
    mipro.write_text(
        program_file.read_text()
        .replace("from lmdsl.compiler import RandomSearch", "from lmdsl.compiler import MIPRO")
        .replace("RandomSearch(candidates=3)", "MIPRO(trials=2, instructions=1, demo_sets=3, minibatch_size=4)")
    )
    shared = tmp_path / "shared" / "studies.sqlite3"
    shared.parent.mkdir()
    assert main(["compile", f"{mipro}:classify", "--storage", f"sqlite:///{shared}"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert not (program_file.parent / "classify.lmdsl.json.optuna.sqlite3").exists()
    [name] = optuna.get_all_study_names(f"sqlite:///{shared}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{shared}")
    assert name.startswith("classify-") and len(study.trials) == 2


def test_compile_storage_for_an_optimizer_without_a_study_is_refused(
    program_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compile", f"{program_file}:classify", "--storage", f"sqlite:///{tmp_path / 's.sqlite3'}"]) == 2
    assert "--storage: RandomSearch keeps no study" in capsys.readouterr().err
