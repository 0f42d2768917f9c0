"""The evaluation report: the score, its spread, the errors by type, and the worst examples with
the exact prompts their calls sent.

    result = lmdsl.evaluate(program, devset, metric)
    lmdsl.report.evaluation_report(result, title="route on dev.jsonl").write("eval.html")

(`lmdsl eval app.py:program --devset dev.jsonl --report eval.html` does the same.)
"""

from __future__ import annotations

import datetime
import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdsl.calls.records import CallRecord
from lmdsl.evaluation.results import EvaluationResult, EvaluationRow
from lmdsl.report.page import Page, cards, number, plotly, pre, table, text, write

WORST = 20  # examples shown with their prompts


@dataclass(frozen=True)
class EvaluationReport:
    """One evaluation, ready to show."""

    title: str
    result: EvaluationResult
    made: str

    def html(self) -> str:
        return render(self)

    def write(self, path: str | Path) -> Path:
        """Write the report as one self-contained HTML file (`ReportError` if it cannot be written)."""
        return write(path, self.html())


def evaluation_report(result: EvaluationResult, *, title: str | None = None) -> EvaluationReport:
    plotly()  # fail now, not when writing, when plotly is missing
    return EvaluationReport(
        title or f"Evaluation of {result.target or 'the program'}",
        result,
        datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def worst(rows: Sequence[EvaluationRow], count: int = WORST) -> list[EvaluationRow]:
    """The lowest-scoring rows, errors first, then in dev-set order."""
    return sorted(rows, key=lambda row: (row.error is None, row.score, row.index))[:count]


def render(report: EvaluationReport) -> str:
    result = report.result
    page = Page(report.title, f"{len(result.rows)} examples, {report.made}")
    page.parts.append(
        cards(
            [
                ("score", number(result.score)),
                ("examples", str(len(result.rows))),
                ("errors", str(result.errors)),
                ("LM calls", f"{result.lm_calls:,}"),
                ("cached calls", f"{result.cached_calls:,}"),
                ("tokens", f"{result.total_tokens:,}"),
                ("time", f"{result.seconds:,.1f} s"),
            ]
        )
    )
    if result.rows:
        page.section("Scores", page.figure(_histogram(result)))
    errors = Counter(row.error_type for row in result.rows if row.error_type is not None)
    if errors:
        page.section("Errors by type", page.figure(_errors(errors)) + _error_table(result.rows, errors))
    page.section(f"The {min(WORST, len(result.rows))} worst examples, with their prompts", _worst(result.rows))
    return page.render()


def _histogram(result: EvaluationResult) -> Any:
    go = plotly()
    figure = go.Figure(
        go.Histogram(x=[row.score * 100 for row in result.rows], xbins={"start": -5, "end": 105, "size": 10})
    )
    figure.update_layout(
        title="How many examples scored how much", xaxis_title="score", yaxis_title="examples", height=320
    )
    return figure


def _errors(errors: Counter[str]) -> Any:
    go = plotly()
    kinds = errors.most_common()
    figure = go.Figure(go.Bar(x=[html.escape(kind) for kind, _ in kinds], y=[count for _, count in kinds]))
    figure.update_layout(title="Examples that failed, by error type", yaxis_title="examples", height=320)
    return figure


def _error_table(rows: Sequence[EvaluationRow], errors: Counter[str]) -> str:
    first = {}
    for row in rows:
        if row.error_type is not None and row.error_type not in first:
            first[row.error_type] = row
    body = [
        [text(kind), str(count), pre(first[kind].describe_error(limit=600))] for kind, count in errors.most_common()
    ]
    return table(["error type", "examples", "the first"], body, numeric=(1,))


def _worst(rows: Sequence[EvaluationRow]) -> str:
    parts = []
    for row in worst(rows):
        outcome = f"{row.error_type}: {row.error}" if row.error is not None else row.prediction
        summary = f"example {row.index}: score {number(row.score * 100)}" + (
            f", {row.error_type}" if row.error_type else ""
        )
        details = table(
            ["inputs", "labels", "prediction or error"],
            [[pre(dict(row.inputs)), pre(dict(row.labels)), pre(outcome)]],
        )
        feedback = getattr(row, "feedback", None)
        if feedback:
            details += f"<p>Why: </p>{pre(feedback)}"
        calls: tuple[CallRecord, ...] = getattr(row, "calls", ())
        prompts = "".join(_call(record) for record in calls)
        parts.append(f"<details><summary>{html.escape(summary)}</summary>{details}{prompts}</details>")
    return "".join(parts) or "<p>No example.</p>"


def _call(record: CallRecord) -> str:
    head = f"{record.function} on {record.model}, {len(record.attempts)} attempt(s)"
    return f"<h4>{html.escape(head)}</h4>{pre(record.format())}"
