"""Compile and evaluation reports (`lmdsl.report`, `--report`): what they show, that hostile text in
examples, predictions and prompts stays text, that the file needs no network, and typed errors for
a place that cannot be written and for a missing plotting library."""

from __future__ import annotations

import html
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmdsl
from lmdsl.calls.records import CallRecord
from lmdsl.cli import main
from lmdsl.cli.commands import load_program
from lmdsl.evaluation.results import EvaluationRow, totals
from lmdsl.lm.types import Attempt, Message, Request, Usage
from lmdsl.report import compile_with_report, evaluation_report
from lmdsl.report.evaluation import worst
from lmdsl.report.page import Page, table, text
from lmdsl.unicode import printable
from tests.reports import HOSTILE, devset_file, program_file

SCRIPT_TAG = re.compile(r"<script\b", re.IGNORECASE)


def assert_inert(page: str) -> None:
    """The page's only scripts are plotly's own (the library, then one per figure): no example text
    became markup, and nothing is loaded from elsewhere."""
    figures = page.count('class="figure"')
    assert len(SCRIPT_TAG.findall(page)) == 1 + figures
    assert "<script>window.pwned" not in page and '<img src=x onerror="window.pwned' not in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"?https?:", page, re.IGNORECASE)


def test_compile_report_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "reports" / "compile.html"
    assert main(["compile", f"{program_file(tmp_path)}:classify", "--dry-run", "--report", str(report)]) == 0
    assert f"wrote {report}" in capsys.readouterr().out
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "Compile report: classify" in page
    assert "RandomSearch on scripted, " in page  # the model the calls ran on (the function pins it)
    assert_inert(page)
    assert html.escape(HOSTILE.split("<img")[0]) in page  # shown, as text
    assert page.count('class="figure"') == 2  # candidates over time; candidates on the whole dev set
    assert "candidate 1/3 (zero-shot)" in page and "candidate 3/3 (bootstrapped)" in page
    # zero-shot says positive to everything (50); the chosen demos fix two dev examples and break "fine"
    assert "2 dev example(s) fixed" in page and "1 broken" in page
    fixed, broken = page.split("<h3>Fixed</h3>")[1].split("<h3>Broken</h3>")
    assert "so bad" in fixed and html.escape("bad " + HOSTILE.split("<img")[0]) in fixed and "great" not in fixed
    assert "fine" in broken
    assert '<span class="tag labelled">labelled</span>' in page and '<span class="tag docstring">' in page


def test_compile_report_from_python(tmp_path: Path) -> None:
    program = load_program(f"{program_file(tmp_path)}:classify")
    compiled, report = compile_with_report(program, tmp_path / "r.html", write_artifact=False)
    assert report.before.score == 50.0 and report.after.score == 75.0 == compiled.score
    assert [entry.title for entry in report.scored] == [
        "candidate 1/3 (zero-shot)",
        "candidate 2/3 (labelled)",
        "candidate 3/3 (bootstrapped)",
    ]
    instructions, demos = report.provenance["sentiment"]
    assert (
        instructions == "docstring"
        and set(demos) == {"labelled"}
        and len(demos) == len(compiled.params["sentiment"].demos)
    )
    assert "Compile report: classify" in (tmp_path / "r.html").read_text()


def test_eval_report_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "eval.html"
    args = [
        "eval",
        f"{program_file(tmp_path)}:classify",
        "--devset",
        str(devset_file(tmp_path)),
        "--report",
        str(report),
    ]
    assert main(args) == 0
    assert f"wrote {report}" in capsys.readouterr().out
    page = report.read_text()
    assert_inert(page)
    assert "classify on " in page and "The 3 worst examples, with their prompts" in page
    assert html.escape("<b>bold</b> </script> bad") in page and "<b>bold</b>" not in page
    assert "Classify the sentiment." in page  # the prompt each example sent


def row(index: int, score: float, error: tuple[str, str] | None = None, prompt: str = "") -> EvaluationRow:
    request = Request((Message("system", "Classify."), Message("user", prompt)))
    call = CallRecord(
        "sentiment",
        "scripted",
        {"text": prompt},
        None,
        None,
        (Attempt(request, "{}", None, Usage(), "stop", False),),
        0.01,
    )
    return EvaluationRow(
        index=index,
        inputs={"text": prompt},
        labels={"label": "positive"},
        prediction=None if error else "positive",
        score=score,
        error=error[1] if error else None,
        error_type=error[0] if error else None,
        seconds=0.01,
        lm_calls=1,
        input_tokens=10,
        output_tokens=2,
        calls=(call,),
    )


def test_eval_report_shows_errors_by_type_and_the_worst_examples_with_their_prompts() -> None:
    rows = [
        row(0, 1.0, prompt="fine text"),
        row(1, 0.0, prompt=f"user text {HOSTILE}"),
        row(2, 0.0, ("OutputError", "sentiment: no valid output"), prompt="broke it"),
        row(3, 0.0, ("OutputError", "sentiment: no valid output"), prompt="broke again"),
        row(4, 0.0, ("ValueError", "metric: <bad>"), prompt="metric broke"),
        row(5, 0.5, prompt="half"),
    ]
    assert [r.index for r in worst(rows)] == [2, 3, 4, 1, 5, 0]
    page = evaluation_report(totals("classify", rows, 1.0), title="classify <dev>").html()
    assert_inert(page)
    assert "<title>classify &lt;dev&gt;</title>" in page
    errors = page.split("<h2>Errors by type</h2>")[1].split("</section>")[0]
    assert '<td>OutputError</td><td class="num">2</td>' in errors and "<td>ValueError</td>" in errors
    assert "metric: &lt;bad&gt;" in errors
    assert html.escape(f"user text {HOSTILE}") in page  # in the prompt of example 1 (plain text there), escaped
    assert page.count('class="figure"') == 2


def test_a_place_that_cannot_be_written_is_a_report_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    report = evaluation_report(totals("classify", [row(0, 1.0)], 1.0))
    with pytest.raises(lmdsl.ReportError, match=r"cannot write the report to .*a-file/r.html.*folder you can write to"):
        report.write(blocker / "r.html")


def test_without_plotly_a_report_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)  # import fails as if not installed
    with pytest.raises(lmdsl.ReportError, match=r"pip install 'lmdsl\[report\]'"):
        evaluation_report(totals("classify", [row(0, 1.0)], 1.0))
    report = tmp_path / "r.html"
    assert main(["compile", f"{program_file(tmp_path)}:classify", "--dry-run", "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert "ReportError" in err and "lmdsl[report]" in err and not report.exists()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(value=st.text() | JSON)
def test_any_value_is_shown_as_text_never_as_markup(value: object) -> None:
    shown = text(value)
    assert "<" not in shown and ">" not in shown and '"' not in shown
    cell = table(["h"], [[shown]])
    assert cell.count("<td") == 1 and cell.count("</td>") == 1
    if isinstance(value, str) and len(value) < 1000:
        assert html.unescape(shown) == printable(value)


@given(title=st.text())
def test_a_hostile_title_stays_in_the_title(title: str) -> None:
    page = Page(title, title).render()
    assert page.count("<title>") == 1 and page.count("</title>") == 1 and "<script" not in page


def test_the_report_module_is_not_imported_by_lmdsl() -> None:
    assert isinstance(sys.modules["lmdsl.report"], types.ModuleType)  # imported by this test
    code = "import sys, lmdsl; print('lmdsl.report' in sys.modules, 'plotly' in sys.modules, 'opentelemetry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


def test_a_mipro_compile_report_shows_optunas_pictures_of_the_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("optuna", reason="MIPRO needs optuna (./dev test installs it)")
    mipro = tmp_path / "mipro_app.py"
    mipro.write_text(
        program_file(tmp_path)
        .read_text()
        .replace("from lmdsl.compiler import RandomSearch", "from lmdsl.compiler import MIPRO")
        .replace(
            "RandomSearch(candidates=3, threads=1)", "MIPRO(trials=3, instructions=1, demo_sets=3, minibatch_size=2)"
        )
    )
    report = tmp_path / "mipro.html"
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    assert main(["compile", f"{mipro}:classify", "--dry-run", "--storage", storage, "--report", str(report)]) == 0
    page = report.read_text()
    assert_inert(page)
    assert "MIPRO&#x27;s Optuna study (classify-" in page
    assert page.count('class="figure"') == 4  # over time, per candidate, Optuna's history and slice
    assert "trial 1" in page and "on 2 examples (a minibatch)" in page
