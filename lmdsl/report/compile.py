"""The compile report: what the optimizer tried, what it chose, and which dev examples that changed.

    compiled, report = lmdsl.report.compile_with_report(program, "report.html")

(`lmdsl compile app.py:program --report report.html` does the same.) Every candidate scored
during the compile is kept (`lmdsl.compiler.base.journaling`), so the report needs no extra
model call when the compile scored the zero-shot program and the chosen one on the whole dev set
(every optimizer that searches does); otherwise it evaluates them, from the cache where it can.
"""

from __future__ import annotations

import datetime
import html
import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdsl.compiler.base import Compiled, ScoredCandidate, journaling, labelled_demo
from lmdsl.compiler.decorator import CompileConfig, compile_program
from lmdsl.config import settings
from lmdsl.data import Example
from lmdsl.evaluation.results import EvaluationResult, EvaluationRow
from lmdsl.evaluation.runner import evaluate
from lmdsl.params import Demo, Params
from lmdsl.program import Program
from lmdsl.report.page import Page, cards, number, plotly, pre, table, tag, text, write
from lmdsl.scores import Metric

MAX_CHANGED_ROWS = 200  # per table of fixed or broken examples


@dataclass(frozen=True)
class CompileReport:
    """Everything a compile report shows, as plain data: the program, the result, every scored
    candidate in order, and the dev set's rows before (zero-shot) and after (the chosen parameters)."""

    program: str
    model: str
    compiled: Compiled
    scored: tuple[ScoredCandidate, ...]
    before: EvaluationResult
    after: EvaluationResult
    docstrings: Mapping[str, str]
    provenance: Mapping[str, tuple[str, tuple[str, ...]]]  # function -> (instructions', each demo's)
    made: str

    def html(self) -> str:
        return render(self)

    def write(self, path: str | Path) -> Path:
        """Write the report as one self-contained HTML file (`ReportError` if it cannot be written)."""
        return write(path, self.html())


def compile_with_report(
    program: Program[..., Any], path: str | Path, *, write_artifact: bool = True, storage: str | None = None
) -> tuple[Compiled, CompileReport]:
    """`compile_program`, then its report written to `path`. The report's dependency (plotly) is
    checked first, so a missing one fails before the compile, not after it."""
    plotly()
    config = program.compile_config
    if not isinstance(config, CompileConfig):
        raise TypeError(f"{program.name} has no compile configuration: decorate it with @lmdsl.optimize(...)")
    with journaling() as scored:
        compiled = compile_program(program, write=write_artifact, storage=storage)
    report = build_report(program, compiled, scored, config.trainset, config.devset, config.metric)
    report.write(path)
    return compiled, report


def build_report(
    program: Program[..., Any],
    compiled: Compiled,
    scored: Sequence[ScoredCandidate],
    trainset: Sequence[Example],
    devset: Sequence[Example] | None,
    metric: Metric,
) -> CompileReport:
    """A report from a finished compile and the candidates it scored (`journaling`)."""
    dev = list(devset if devset is not None else trainset)
    functions = program.functions
    zero_shot = {name: Params(fn.signature.instructions) for name, fn in functions.items()}
    before = _full_run(scored, zero_shot, len(dev)) or _evaluated(program, zero_shot, dev, metric)
    chosen = dict(compiled.params)
    after = _full_run(reversed(scored), chosen, len(dev)) or _evaluated(program, chosen, dev, metric)
    configured = settings().model_for(None)
    used = sorted({call.model for row in after.rows for call in getattr(row, "calls", ())})  # what the calls ran on
    return CompileReport(
        program=program.name,
        model=", ".join(used) or (configured if isinstance(configured, str) else configured.name),
        compiled=compiled,
        scored=tuple(scored),
        before=before,
        after=after,
        docstrings={name: fn.signature.instructions for name, fn in functions.items()},
        provenance=_provenance(program, chosen, trainset, str(compiled.settings.get("optimizer", ""))),
        made=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _full_run(scored: Iterable[ScoredCandidate], params: Mapping[str, Params], size: int) -> EvaluationResult | None:
    """The compile's own evaluation of these parameters on the whole dev set, if it made one: the
    first found (the baseline comes first; the chosen one is looked for from the end, since a
    fine-tune scores the same parameters before and after changing the weights)."""
    for entry in scored:
        if len(entry.result.rows) == size and all(entry.params.get(name) == p for name, p in params.items()):
            return entry.result
    return None


def _evaluated(
    program: Program[..., Any], params: Mapping[str, Params], dev: Sequence[Example], metric: Metric
) -> EvaluationResult:
    with program.with_params(params):
        return evaluate(program, dev, metric, progress=False)


def _provenance(
    program: Program[..., Any], chosen: Mapping[str, Params], trainset: Sequence[Example], optimizer: str
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Where each chosen instruction and demo came from: the docstring or the optimizer's proposal
    (evolved, for GEPA); a demo that is a training example's labels, or one bootstrapped from a run."""
    functions = program.functions
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, params in chosen.items():
        fn = functions.get(name)
        if fn is None:
            continue
        if params.instructions == fn.signature.instructions:
            instructions = "docstring"
        else:
            instructions = "evolved" if optimizer.upper().startswith("GEPA") else "proposed"
        labels = _label_fields(program, trainset) if len(functions) == 1 else ()
        labelled = [demo for example in trainset if (demo := labelled_demo(fn, example, labels)) is not None]
        found[name] = (instructions, tuple(_demo_source(demo, labelled) for demo in params.demos))
    return found


def _label_fields(program: Program[..., Any], trainset: Sequence[Example]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for example in trainset for name in example.labels_for(program)))


def _demo_source(demo: Demo, labelled: Sequence[Demo]) -> str:
    same = any(dict(demo.inputs) == dict(other.inputs) and demo.output == other.output for other in labelled)
    return "labelled" if same else "bootstrapped"


# -- rendering --------------------------------------------------------------------------------------------
def render(report: CompileReport) -> str:
    compiled = report.compiled
    page = Page(
        f"Compile report: {report.program}",
        f"{compiled.settings.get('optimizer', 'optimizer')} on {report.model}, {report.made}",
    )
    tokens = compiled.tokens
    page.parts.append(
        cards(
            [
                ("before (zero-shot)", number(report.before.score)),
                ("after (compiled)", number(report.after.score)),
                ("candidates scored", str(len(report.scored))),
                ("LM calls", f"{compiled.lm_calls:,}"),
                ("cached calls", f"{compiled.cached_calls:,}"),
                ("tokens", f"{tokens:,}"),
                ("time", f"{compiled.seconds:,.1f} s"),
            ]
        )
    )
    if report.scored:
        page.section("Every candidate, in the order it was scored", page.figure(_timeline(report)))
        page.parts.append(_candidate_table(report))
    if compiled.candidates:
        page.section("Candidates on the whole dev set", page.figure(_candidate_bars(report)))
    study = _study(report)
    if study is not None:
        figures = _optuna_figures(study)
        if figures:
            page.section(
                f"MIPRO's Optuna study ({study.study_name})", "".join(page.figure(figure) for figure in figures)
            )
    page.section("Before and after, per fuzzy function", _functions(report))
    page.section("What changed on the dev set", _changes(report))
    return page.render()


def _timeline(report: CompileReport) -> Any:
    go = plotly()
    start = min(entry.started for entry in report.scored)
    full = max(len(entry.result.rows) for entry in report.scored)
    figure = go.Figure()
    groups: dict[int, list[ScoredCandidate]] = {}
    for entry in report.scored:
        groups.setdefault(len(entry.result.rows), []).append(entry)
    for size, entries in sorted(groups.items(), reverse=True):
        figure.add_trace(
            go.Scatter(
                x=[entry.started - start + entry.result.seconds for entry in entries],
                y=[entry.result.score for entry in entries],
                mode="markers",
                marker={"size": 11 if size == full else 8, "symbol": "circle" if size == full else "diamond-open"},
                name=f"on {size} examples" + (" (the dev set)" if size == full else " (a minibatch)"),
                text=[html.escape(entry.title) for entry in entries],
                customdata=[[entry.result.lm_calls, entry.result.total_tokens] for entry in entries],
                hovertemplate="%{text}<br>score %{y:.1f}<br>%{customdata[0]} LM calls, %{customdata[1]} tokens"
                "<extra></extra>",
            )
        )
    best: list[float] = []
    times: list[float] = []
    for entry in report.scored:
        if len(entry.result.rows) == full:
            best.append(max(entry.result.score, best[-1]) if best else entry.result.score)
            times.append(entry.started - start + entry.result.seconds)
    figure.add_trace(go.Scatter(x=times, y=best, mode="lines", line={"shape": "hv", "dash": "dot"}, name="best so far"))
    figure.update_layout(
        title="Score of each candidate when its scoring finished",
        xaxis_title="seconds since the compile started",
        yaxis_title="score",
        yaxis_range=[-2, 102],
        height=420,
    )
    return figure


def _candidate_bars(report: CompileReport) -> Any:
    go = plotly()
    candidates = [c for c in report.compiled.candidates if c.score is not None]
    chosen = report.compiled.score
    figure = go.Figure(
        go.Bar(
            y=[html.escape(c.label) for c in candidates],
            x=[c.score for c in candidates],
            orientation="h",
            marker={"color": ["#2da44e" if c.score == chosen else "#8c959f" for c in candidates]},
            hovertemplate="%{y}: %{x:.1f}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Dev-set score of each candidate (green: the best, chosen first)",
        xaxis_title="score",
        xaxis_range=[0, 100],
        yaxis={"autorange": "reversed"},
        height=max(240, 40 * len(candidates) + 120),
    )
    return figure


def _study(report: CompileReport) -> Any:
    """MIPRO's study, when it was kept in storage (the default beside an artifact): the newest study
    named after this program there, or the one the settings name. None otherwise."""
    settings = report.compiled.settings
    storage = settings.get("storage")
    if settings.get("optimizer") != "MIPRO" or not isinstance(storage, str):
        return None
    try:
        optuna: Any = importlib.import_module("optuna")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        names = [settings["study_name"]] if settings.get("study_name") else optuna.get_all_study_names(storage)
        studies = [
            optuna.load_study(study_name=name, storage=storage)
            for name in names
            if name == settings.get("study_name") or name.startswith(f"{report.program}-")
        ]
    except Exception:  # no optuna, or the storage is gone: the report goes without the study's plots
        return None
    finished = [study for study in studies if study.trials]
    if not finished:
        return None
    return max(finished, key=lambda study: max(t.datetime_start or datetime.datetime.min for t in study.trials))


def _optuna_figures(study: Any) -> list[Any]:
    """Optuna's own pictures of the study: its optimization history and each parameter's slice."""
    figures = []
    for name in ("plot_optimization_history", "plot_slice"):
        try:
            visualization: Any = importlib.import_module("optuna.visualization")
            figures.append(getattr(visualization, name)(study))
        except Exception:  # a plot Optuna cannot draw for this study (too few trials): leave it out
            continue
    return figures


def _candidate_table(report: CompileReport) -> str:
    start = min(entry.started for entry in report.scored)
    rows = [
        [
            text(entry.title),
            number(entry.started - start),
            str(len(entry.result.rows)),
            number(entry.result.score),
            str(entry.result.errors),
            f"{entry.result.lm_calls:,}",
            f"{entry.result.cached_calls:,}",
            f"{entry.result.total_tokens:,}",
            number(entry.result.seconds),
        ]
        for entry in report.scored
    ]
    header = ["candidate", "started (s)", "examples", "score", "errors", "LM calls", "cached", "tokens", "seconds"]
    return f"<details><summary>Every scoring, as a table</summary>{table(header, rows, numeric=range(1, 9))}</details>"


def _functions(report: CompileReport) -> str:
    parts: list[str] = []
    for name, params in report.compiled.params.items():
        instructions_from, demo_sources = report.provenance.get(name, ("docstring", ()))
        docstring = report.docstrings.get(name, "")
        summary = table(
            ["", "before", "after"],
            [
                ["instructions", pre(docstring), pre(params.instructions) + " " + tag(instructions_from)],
                ["demos", "0", str(len(params.demos))],
            ],
        )
        demos = table(
            ["#", "from", "inputs", "output", "reasoning"],
            [
                [str(i), tag(source), pre(dict(demo.inputs)), pre(demo.output), pre(demo.reasoning or "")]
                for i, (demo, source) in enumerate(zip(params.demos, demo_sources), 1)
            ],
        )
        parts.append(f"<h3>{html.escape(name)}</h3>{summary}{demos if params.demos else ''}")
    return "".join(parts) or "<p>No fuzzy function.</p>"


def _changes(report: CompileReport) -> str:
    before = {row.index: row for row in report.before.rows}
    fixed: list[tuple[EvaluationRow, EvaluationRow]] = []
    broken: list[tuple[EvaluationRow, EvaluationRow]] = []
    for row in report.after.rows:
        old = before.get(row.index)
        if old is None:
            continue
        if row.score > old.score:
            fixed.append((old, row))
        elif row.score < old.score:
            broken.append((old, row))
    same = len(report.after.rows) - len(fixed) - len(broken)
    lead = (
        f"<p>{len(fixed)} dev example(s) fixed {tag('fixed')}, {len(broken)} broken {tag('broken')}, "
        f"{same} scored the same.</p>"
    )
    return lead + _changed_table("Fixed", fixed) + _changed_table("Broken", broken)


def _changed_table(title: str, pairs: Sequence[tuple[EvaluationRow, EvaluationRow]]) -> str:
    if not pairs:
        return ""
    rows = [
        [
            str(old.index),
            pre(dict(new.inputs)),
            pre(dict(new.labels)),
            pre(_outcome(old)),
            number(old.score * 100),
            pre(_outcome(new)),
            number(new.score * 100),
        ]
        for old, new in pairs[:MAX_CHANGED_ROWS]
    ]
    more = f"<p>… and {len(pairs) - MAX_CHANGED_ROWS} more.</p>" if len(pairs) > MAX_CHANGED_ROWS else ""
    header = ["example", "inputs", "labels", "before", "score", "after", "score"]
    return f"<h3>{html.escape(title)}</h3>" + table(header, rows, numeric=(4, 6)) + more


def _outcome(row: EvaluationRow) -> object:
    return f"{row.error_type}: {row.error}" if row.error is not None else row.prediction
