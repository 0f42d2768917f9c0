"""What every optimizer shares: the result of compiling, the LM-call budget, labelled demos,
scoring a candidate."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lmdsl.calls.function import FuzzyFunction
from lmdsl.calls.records import CallObserver, CallRecord, observing
from lmdsl.errors import LMDSLError
from lmdsl.evaluation.results import EvaluationResult
from lmdsl.evaluation.runner import evaluate_shown
from lmdsl.params import Demo, Params
from lmdsl.scores import Metric
from lmdsl.tracing import annotate, event, span
from lmdsl.warn import warn_user
from lmdsl.weights import Weights

if TYPE_CHECKING:
    from lmdsl.data import Example
    from lmdsl.program import Program

log = logging.getLogger("lmdsl.compiler")
_progress_log = logging.getLogger("lmdsl.compiler.progress")  # shown with the compile's log, told apart from it


class BudgetWarning(UserWarning):
    """An optimizer's LM-call or token budget ended its search before it scored anything better
    than the program as given, which it therefore keeps."""


class UnusedLabelsWarning(UserWarning):
    """The training examples' labels fit no fuzzy function of a program of several, so labelled
    demos are none: the labelled candidate is the zero-shot one."""


@dataclass(frozen=True)
class Candidate:
    """One parameter set an optimizer tried, and its dev score (None if it was not scored)."""

    label: str
    params: Mapping[str, Params]
    score: float | None


@dataclass(frozen=True)
class Compiled:
    """What compiling produced: the chosen parameters, their score, the baseline, the cost
    (`lm_calls` and `tokens` reached a model; `cached_calls` were answered by the cache), and
    fine-tuned weights when the optimizer trained some."""

    params: Mapping[str, Params]
    score: float | None
    baseline: float | None
    candidates: tuple[Candidate, ...]
    lm_calls: int
    tokens: int
    seconds: float
    settings: Mapping[str, Any] = field(default_factory=dict)
    cached_calls: int = 0
    weights: Weights | None = None  # fine-tuned weights (BootstrapFinetune), written beside the artifact


class Optimizer(Protocol):
    def compile(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        devset: Sequence[Example] | None = None,
    ) -> Compiled: ...


class BudgetExhausted(LMDSLError):
    """The optimizer's LM-call or token budget ran out; it stops and keeps the best so far."""


class Budget(CallObserver):
    """Counts the LM calls and tokens spent in its block (cached replies are free: they are
    counted apart, in `cached_calls`)."""

    def __init__(self, max_lm_calls: int | None = None, max_tokens: int | None = None) -> None:
        self.max_lm_calls = max_lm_calls
        self.max_tokens = max_tokens
        self.lm_calls = 0
        self.tokens = 0
        self.cached_calls = 0
        self._lock = threading.Lock()

    def record(self, function: Any, record: CallRecord) -> None:
        spent = record.spent
        with self._lock:
            self.lm_calls += spent.lm_calls
            self.tokens += spent.usage.total_tokens
            self.cached_calls += len(record.attempts) - spent.lm_calls

    @property
    def exhausted(self) -> bool:
        return (self.max_lm_calls is not None and self.lm_calls >= self.max_lm_calls) or (
            self.max_tokens is not None and self.tokens >= self.max_tokens
        )

    def check(self) -> None:
        """Raise `BudgetExhausted` once the budget is spent (call between units of work)."""
        if self.exhausted:
            raise BudgetExhausted(
                f"budget spent: {self.lm_calls} LM calls (max {self.max_lm_calls}), "
                f"{self.tokens} tokens (max {self.max_tokens})"
            )

    @contextmanager
    def counting(self) -> Iterator[Budget]:
        with observing(self):
            yield self


def labelled_demo(fn: FuzzyFunction[..., Any], example: Example, label_fields: Sequence[str]) -> Demo | None:
    """A demo for `fn` straight from a labelled example, when the example has every input of
    `fn` and a label for its output: a field named like the output's key (the function's
    name), the output model's fields, or else (pass `label_fields` only for a program of
    one fuzzy function) the example's only label. None when it has not, or it does not fit."""
    fields = example.fields
    if any(name not in fields for name in fn.signature.input_names):
        return None
    spec = fn.signature.output
    if spec.key is not None and spec.key in fields:
        output: Any = fields[spec.key]
    elif (
        spec.key is None
        and isinstance(spec.schema.get("required"), list)
        and all(name in fields for name in spec.schema["required"])
    ):
        output = {name: fields[name] for name in spec.schema.get("properties", {}) if name in fields}
    elif len(label_fields) == 1:
        output = fields[label_fields[0]]
    else:
        return None
    demo = Demo({name: fields[name] for name in fn.signature.input_names}, output)
    try:
        checked = fn.check_params(Params("", (demo,)))
    except LMDSLError:
        return None
    return checked.demos[0]


def with_demos(fn: FuzzyFunction[..., Any], demos: Sequence[Demo], instructions: str | None = None) -> Params:
    return Params(instructions if instructions is not None else fn.params.instructions, tuple(demos))


def output_fields(fn: FuzzyFunction[..., Any]) -> tuple[str, ...]:
    """The example fields a labelled demo of `fn` takes its output from: the output's key (the
    function's name), or the fields of an output model."""
    spec = fn.signature.output
    if spec.key is not None:
        return (spec.key,)
    return tuple(spec.schema.get("properties", {}))


def warn_budget_ended_search(program: Program[..., Any], optimizer: str, budget: Budget, *, how_far: str) -> None:
    """Warn (`BudgetWarning`) that the budget, not the search, chose the program as given."""
    limits = " and ".join(
        f"{spent:,} of {limit:,} {unit}"
        for spent, limit, unit in (
            (budget.lm_calls, budget.max_lm_calls, "LM calls"),
            (budget.tokens, budget.max_tokens, "tokens"),
        )
        if limit is not None
    )
    warn_user(
        f"{program.name}: {optimizer}'s budget ran out ({limits}) {how_far}, so the compiled program is the "
        "program as given; raise max_lm_calls (or max_total_tokens), or search less",
        BudgetWarning,
        at=program.__wrapped__,
    )


def warn_unused_labels(
    program: Program[..., Any], examples: Sequence[Example], params: Mapping[str, Params], *, what: str, wanted: int
) -> None:
    """Warn (`UnusedLabelsWarning`) when, in a program of several fuzzy functions, labelled
    examples gave no function a demo: name the label fields and what each function takes and returns."""
    functions = program.functions
    if not wanted or len(functions) < 2 or any(p.demos for p in params.values()):
        return  # `wanted` labelled demos per function: none asked for, none missed
    labels = list(dict.fromkeys(name for example in examples for name in example.labels_for(program)))
    if not labels:
        return
    shapes = ", ".join(
        f"{name}({', '.join(fn.signature.input_names)}) -> {' + '.join(output_fields(fn)) or '?'}"
        for name, fn in functions.items()
    )
    named = [name for name, fn in functions.items() if set(output_fields(fn)) & set(labels)]
    if named:
        why = (
            f"the label field(s) {', '.join(labels)} fit the output of {', '.join(named)}, "
            "but no example has all of its inputs and a label of its output type"
        )
    else:
        why = (
            f"in a program of several fuzzy functions a label counts for the function whose output it names, "
            f"and the label field(s) {', '.join(labels)} name none"
        )
    warn_user(
        f"{program.name}: {what} has no demos (it is the zero-shot program): {why}; the fuzzy functions "
        f"take and return: {shapes}. Name a label field after the output of the function it labels",
        UnusedLabelsWarning,
        at=program.__wrapped__,
    )


def score_candidate(
    program: Program[..., Any],
    examples: Sequence[Example],
    metric: Metric,
    *,
    threads: int,
    title: str,
    budget: Budget | None = None,
) -> EvaluationResult:
    """Evaluate a candidate (its parameters already in force), its progress shown while the
    compile's log is (`lmdsl compile` shows it); a span when tracing, an entry in the journal
    when one is kept (`journaling`). With a `budget`, no example starts once it is spent, and a
    candidate it cut short raises `BudgetExhausted` instead of a score over part of the examples."""
    started = time.time()
    halt = None if budget is None else (lambda: budget.exhausted)
    with span(f"score {title}", {"lmdsl.candidate": title, "lmdsl.examples": len(examples)}) as current:
        result = evaluate_shown(program, examples, metric, threads=threads, title=title, log=_progress_log, halt=halt)
        if budget is not None and len(result.rows) < len(examples):
            raise BudgetExhausted(
                f"{title}: the budget ran out after {len(result.rows)} of {len(examples)} examples "
                f"({budget.lm_calls} LM calls): not scored"
            )
        annotate(
            current, {"lmdsl.score": result.score, "lmdsl.errors": result.errors, "lmdsl.lm_calls": result.lm_calls}
        )
        event(
            current,
            "gen_ai.evaluation.result",
            {
                "gen_ai.evaluation.name": getattr(metric, "__name__", "metric"),
                "gen_ai.evaluation.score.value": result.score / 100,
            },
        )
    journal = _journal.get()
    if journal is not None:
        journal.append(ScoredCandidate(title, dict(program.params), started, result))
    return result


@dataclass(frozen=True)
class ScoredCandidate:
    """A candidate as it was scored during a compile: its title, its parameters, when its
    scoring started (`time.time()`) and the evaluation, rows included (what a compile report shows)."""

    title: str
    params: Mapping[str, Params]
    started: float
    result: EvaluationResult


_journal: ContextVar[list[ScoredCandidate] | None] = ContextVar("lmdsl_compile_journal", default=None)


@contextmanager
def journaling() -> Iterator[list[ScoredCandidate]]:
    """Keep every candidate scored in this block (by any optimizer), in order."""
    scored: list[ScoredCandidate] = []
    token = _journal.set(scored)
    try:
        yield scored
    finally:
        _journal.reset(token)


def describe_errors(result: EvaluationResult) -> str:
    """`, N error(s), the first: example I: Type: message (at file:line)`, or nothing without errors."""
    first = result.first_error
    if first is None:
        return ""
    return f", {result.errors} error(s), the first: {first.describe_error()}"
