"""Scoring a fuzzy function or a program on labelled examples.

    devset = lmdsl.load_examples("tickets.jsonl")            # Example(message=..., intent=...)
    result = lmdsl.evaluate(route, devset, lambda ex, pred: pred == ex.intent)
    print(result.summary())                                  # score, errors, LM calls, tokens, time

An `Example` is an immutable bag of named fields. The fields named like the target's
parameters are its inputs; the others are labels for the metric. `evaluate` runs
every example on a thread pool (results keep the devset's order), counts the LM
calls and tokens each one really spent (cached replies cost nothing), and records
an example whose run or metric fails as score 0 with its error, instead of stopping. Each
row's `feedback` gathers why it scored as it did (`run_feedback`).
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lmdsl.calls.function import FuzzyFunction
from lmdsl.calls.records import CallRecord, Spent, capture
from lmdsl.data import Example, metric_takes_trace
from lmdsl.errors import EvaluationError
from lmdsl.evaluation.progress import Reporter, State, reporter, shown
from lmdsl.evaluation.results import EvaluationResult, EvaluationRow, totals
from lmdsl.parallel import run_each
from lmdsl.program import Program, TraceStep
from lmdsl.scores import Metric, metric_feedback, metric_score
from lmdsl.tracing import Scores, annotate, evaluation_result, span
from lmdsl.warn import error_site

Target = Program[..., Any] | FuzzyFunction[..., Any]


def evaluate(
    target: Target,
    devset: Iterable[Example | Mapping[str, Any]],
    metric: Metric,
    *,
    threads: int = 4,
    max_errors: int | None = None,
    progress: bool | None = None,
) -> EvaluationResult:
    """Run `target` (a fuzzy function or a program) on every example and score it with `metric`.

    `metric(example, prediction)` or `metric(example, prediction, trace)` (decided by how
    many positional parameters it takes) returns a bool or a number between 0 and 1; the
    score is their mean as a percentage. `trace` is the tuple of `TraceStep`s of the run
    (one step for a fuzzy function). Examples run on up to `threads` threads, each in a
    copy of the caller's context (configuration, `using`); rows keep the devset's order.
    An example whose run or metric raises scores 0 and keeps its error; once more than
    `max_errors` have (None: no limit), no new example starts and `EvaluationError`
    carries the partial result. `progress`: None shows a progress bar when stderr is a
    terminal and a plain line every ~10% otherwise, False nothing, True always the bar.
    """
    return _evaluate(
        target, devset, metric, threads, max_errors, lambda total: reporter(progress, _name(target), total)
    )


def evaluate_shown(
    target: Target,
    devset: Iterable[Example | Mapping[str, Any]],
    metric: Metric,
    *,
    threads: int,
    title: str,
    log: logging.Logger,
    halt: Callable[[], bool] | None = None,
) -> EvaluationResult:
    """`evaluate` as an optimizer scores a candidate: its progress shown under `title` while
    `log` shows INFO (a rich bar on a terminal, lines on `log` otherwise), silent when it does not.
    Once `halt()` is true no new example starts (a spent budget): the result then has fewer rows
    than the devset has examples."""
    return _evaluate(target, devset, metric, threads, None, lambda total: shown(title, total, log), halt)


def _name(target: Target) -> str:
    return target.signature.qualname if isinstance(target, FuzzyFunction) else target.name


def _evaluate(
    target: Target,
    devset: Iterable[Example | Mapping[str, Any]],
    metric: Metric,
    threads: int,
    max_errors: int | None,
    display: Callable[[int], Reporter],
    halt: Callable[[], bool] | None = None,
) -> EvaluationResult:
    run = _runner(target)
    name = _name(target)
    with_trace = metric_takes_trace(metric)
    if max_errors is not None and (not isinstance(max_errors, int) or isinstance(max_errors, bool) or max_errors < 0):
        raise ValueError(f"max_errors must be a whole number >= 0 or None, not {max_errors!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, not {threads!r}")
    examples = [_as_example(item, number) for number, item in enumerate(devset)]
    if not examples:
        raise ValueError(f"evaluate {name}: the devset is empty")

    state = State(len(examples), max_errors, display(len(examples)))
    metric_name = getattr(metric, "__name__", type(metric).__name__)
    scores = Scores()  # for the evaluation's span (tracing on)

    def one(indexed: tuple[int, Example]) -> EvaluationRow | None:
        index, example = indexed
        if state.stop.is_set() or (halt is not None and halt()):
            return None
        with span(f"evaluate {name} example", {"lmdsl.example": index}) as example_span:
            row = _evaluate_one(target, run, metric, with_trace, index, example)
            evaluation_result(example_span, metric_name, row.score, row.error_type, scores)
        state.finished(row)
        return row

    started = time.perf_counter()
    try:
        with span(f"evaluate {name}", {"lmdsl.target": name, "lmdsl.examples": len(examples)}) as evaluation:
            outcomes = run_each(one, list(enumerate(examples)), threads=threads)
            annotate(evaluation, {"lmdsl.score": 100 * scores.total / scores.count if scores.count else None})
    finally:
        state.reporter.close()
    seconds = time.perf_counter() - started
    rows: list[EvaluationRow] = []
    for outcome in outcomes:
        row = outcome.unwrap()  # evaluating one example never raises: an error here is a bug
        if row is not None:
            rows.append(row)
    result = totals(name, rows, seconds)
    if state.stop.is_set():
        first = next(row for row in rows if row.error is not None)
        raise EvaluationError(
            f"evaluate {name}: stopped after {result.errors} errors (max_errors={max_errors}); "
            f"{len(rows)} of {len(examples)} examples ran; first error (example {first.index}): "
            f"{first.error_type}: {first.error}",
            result,
        )
    return result


Run = Callable[[Example], tuple[Any, tuple[TraceStep, ...]]]


def _runner(target: Target) -> Run:
    if isinstance(target, FuzzyFunction):
        function: FuzzyFunction[..., Any] = target

        def run_function(example: Example) -> tuple[Any, tuple[TraceStep, ...]]:
            record = function.invoke(function.signature.validate_inputs(example.inputs_for(function)))
            return record.output, (TraceStep(function, record),)

        return run_function
    if isinstance(target, Program):
        program: Program[..., Any] = target

        def run_program(example: Example) -> tuple[Any, tuple[TraceStep, ...]]:
            result = program.invoke(example.inputs_for(program))
            return result.output, result.trace

        return run_program
    raise TypeError(
        f"evaluate needs a fuzzy function or a program, not {target!r}; "
        "decorate a function that calls fuzzy functions with @lmdsl.program"
    )


def _as_example(item: Example | Mapping[str, Any], number: int) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, Mapping):
        return Example(**item)
    raise TypeError(f"devset item {number} is {type(item).__name__}, not an Example (or a mapping of fields)")


def _evaluate_one(
    target: Target, run: Run, metric: Metric, with_trace: bool, index: int, example: Example
) -> EvaluationRow:
    started = time.perf_counter()
    inputs = example.inputs_for(target)
    labels = example.labels_for(target)
    prediction: Any = None
    trace: tuple[TraceStep, ...] = ()
    score = 0.0
    said = ""
    error: BaseException | None = None
    stage = ""
    with capture() as captured:
        try:
            prediction, trace = run(example)
        except Exception as failure:
            error = failure
    # A backtracking program replays earlier calls: the same record is reported again.
    records: dict[int, CallRecord] = {id(record): record for record in captured}
    if error is None:
        try:
            value = metric(example, prediction, trace) if with_trace else metric(example, prediction)
            score = metric_score(value)
            said = metric_feedback(value)
        except Exception as failure:
            error, stage = failure, "metric: "
    spent = sum((record.spent for record in records.values()), Spent())
    attempts = sum(len(record.attempts) for record in records.values())
    site = None if error is None else error_site(error)
    return EvaluationRow(
        index=index,
        inputs=types.MappingProxyType(inputs),
        labels=types.MappingProxyType(labels),
        prediction=prediction,
        score=score if error is None else 0.0,
        error=None if error is None else f"{stage}{error}",
        error_type=None if error is None else type(error).__name__,
        seconds=time.perf_counter() - started,
        lm_calls=spent.lm_calls,
        input_tokens=spent.usage.input_tokens,
        output_tokens=spent.usage.output_tokens,
        error_at=None if site is None else f"{site[0]}:{site[1]}",
        cached_calls=attempts - spent.lm_calls,
        feedback=run_feedback(
            said, tuple(records.values()), None if error is None else f"{stage or 'the run: '}{error}"
        ),
        calls=tuple(records.values()),
    )


MAX_REPLY_CHARS = 300  # of a rejected reply quoted in feedback: enough to see what went wrong


def run_feedback(metric_said: str, records: tuple[CallRecord, ...], error: str | None) -> str | None:
    """Why a run scored as it did, as text: the metric's feedback, then each reply that failed to
    parse or was rejected by a check (with the reason the model was given), then what failed (the run,
    or the metric) and why."""
    lines = [metric_said.strip()] if metric_said.strip() else []
    for record in records:
        for number, attempt in enumerate(record.attempts, 1):
            if attempt.error:
                reply = attempt.text if len(attempt.text) <= MAX_REPLY_CHARS else attempt.text[:MAX_REPLY_CHARS] + "..."
                lines.append(f"{record.function}, attempt {number}: the reply {reply!r} was rejected: {attempt.error}")
    if error is not None:
        lines.append(f"failed: {error}")
    return "\n".join(lines) or None
