"""Demonstration optimizers: labelled demos, bootstrapped demos, and a random search over both.

Bootstrapping runs the program on training examples and keeps the whole trace of
every run the metric accepts (rejection sampling), so every fuzzy function in the
program, intermediate steps included, gets demos of its own inputs and outputs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lmdsl.compiler.base import (
    Budget,
    BudgetExhausted,
    Candidate,
    Compiled,
    describe_errors,
    labelled_demo,
    score_candidate,
    warn_budget_ended_search,
    warn_unused_labels,
    with_demos,
)
from lmdsl.config import using
from lmdsl.data import metric_takes_trace
from lmdsl.params import Demo, Params
from lmdsl.scores import Metric, metric_score

if TYPE_CHECKING:
    from lmdsl.calls.function import FuzzyFunction
    from lmdsl.data import Example
    from lmdsl.program import Program

log = logging.getLogger("lmdsl.compiler")


def metric_passes(metric: Metric, example: Example, prediction: Any, trace: Any, threshold: float | None) -> bool:
    """Whether a run counts as a success: a metric value of 1 (or True), or at least `threshold`."""
    value = metric(example, prediction, trace) if metric_takes_trace(metric) else metric(example, prediction)
    score = metric_score(value)
    return score >= 1.0 if threshold is None else score >= threshold


def labelled_params(
    program: Program[..., Any], examples: Sequence[Example], k: int, rng: random.Random | None
) -> dict[str, Params]:
    """Up to `k` labelled demos per fuzzy function (a random sample when `rng` is given). In a
    program of several fuzzy functions, a label counts for the function it is named after."""
    pool = list(examples)
    if rng is not None:
        rng.shuffle(pool)
    params: dict[str, Params] = {}
    functions = program.functions
    single = len(functions) == 1  # then the program's only label is that function's output
    for name, fn in functions.items():
        demos: list[Demo] = []
        for example in pool:
            if len(demos) >= k:
                break
            demo = labelled_demo(fn, example, list(example.labels_for(program)) if single else [])
            if demo is not None:
                demos.append(demo)
        params[name] = with_demos(fn, demos)
    return params


@dataclass(frozen=True)
class LabeledFewShot:
    """`k` demos per fuzzy function straight from the training set (no LM calls)."""

    k: int = 4
    seed: int | None = 0

    def compile(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        devset: Sequence[Example] | None = None,
    ) -> Compiled:
        started = time.perf_counter()
        params = labelled_params(program, trainset, self.k, random.Random(self.seed) if self.seed is not None else None)
        warn_unused_labels(program, trainset, params, what="LabeledFewShot", wanted=self.k)
        return Compiled(
            params,
            None,
            None,
            (Candidate("labelled", params, None),),
            0,
            0,
            time.perf_counter() - started,
            {"optimizer": "LabeledFewShot", **asdict(self)},
        )


@dataclass(frozen=True)
class BootstrapFewShot:
    """Demos from successful runs of the program on training examples.

    Walks the training set until `max_demos` runs pass the metric (trying each example
    `rounds` times; rounds after the first resample at temperature 1.0 with a new
    rollout), and on while a fuzzy function the runs called still has no demo (a step
    that only some runs reach), then gives every fuzzy function those runs' steps as
    demos, topped up with labelled examples not bootstrapped, up to `max_labeled` demos
    in all. In a program of several steps only the final output is usually labelled: the
    intermediate steps (a search query) learn from the runs whose final output passed.
    """

    max_demos: int = 4
    max_labeled: int = 4
    rounds: int = 1
    threshold: float | None = None
    max_lm_calls: int | None = None
    max_total_tokens: int | None = None
    seed: int = 0

    def compile(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        devset: Sequence[Example] | None = None,
    ) -> Compiled:
        started = time.perf_counter()
        budget = Budget(self.max_lm_calls, self.max_total_tokens)
        with budget.counting():
            params = self.bootstrap(program, trainset, metric, budget=budget)
        return Compiled(
            params,
            None,
            None,
            (Candidate("bootstrapped", params, None),),
            budget.lm_calls,
            budget.tokens,
            time.perf_counter() - started,
            {"optimizer": "BootstrapFewShot", **asdict(self)},
            budget.cached_calls,
        )

    def bootstrap(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        budget: Budget,
        shuffle: random.Random | None = None,
        max_demos: int | None = None,
        runs: dict[int, Traced | None] | None = None,
    ) -> dict[str, Params]:
        """The demo set. Runs under a context-local overlay, so the program's own parameters never change.

        `runs` keeps each training example's outcome (the steps of its passing run, or None) across
        calls, as the candidate ladder passes it: a bootstrap over another order or size reuses the
        runs made before instead of running the program again."""
        wanted = self.max_demos if max_demos is None else max_demos
        order = list(range(len(trainset)))
        if shuffle is not None:
            shuffle.shuffle(order)
        teacher = labelled_params(program, trainset, self.max_labeled, None)
        traced: dict[FuzzyFunction[..., Any], list[Demo]] = {}  # by function: a run may find new ones
        called: set[FuzzyFunction[..., Any]] = set()  # every step a run reached, passed or not
        used: set[int] = set()
        known = {} if runs is None else runs
        for index in order:
            missing = any(fn not in traced for fn in called)  # a step no passing run has given a demo yet
            if budget.exhausted or len(used) >= (2 * wanted if missing else wanted):
                break
            if index not in known:
                known[index] = self._run(program, trainset[index], teacher, metric, called)
            steps = known[index]
            if steps is None:
                continue
            for function, demo in steps:
                called.add(function)
                traced.setdefault(function, []).append(demo)
            used.add(index)
        rest = [trainset[i] for i in sorted(set(range(len(trainset))) - used)]
        topped = labelled_params(program, rest, self.max_labeled, random.Random(self.seed))
        params: dict[str, Params] = {}
        for name, fn in program.functions.items():
            demos = traced.get(fn, [])[:wanted]
            extra = list(topped[name].demos)[: max(0, self.max_labeled - len(demos))]
            params[name] = with_demos(fn, [*demos, *extra])
        return params

    def _run(
        self,
        program: Program[..., Any],
        example: Example,
        teacher: Mapping[str, Params],
        metric: Metric,
        called: set[FuzzyFunction[..., Any]],
    ) -> Traced | None:
        """The steps of a run on `example` that the metric accepts (up to `rounds` tries), else None."""
        inputs = example.inputs_for(program)
        hidden = {  # the example's own labelled demo would give its answer away
            name: Params(p.instructions, tuple(d for d in p.demos if not _from_inputs(d, inputs)))
            for name, p in teacher.items()
        }
        with program.with_params(hidden):
            for round_number in range(self.rounds):
                sampling = {"temperature": 1.0, "rollout": round_number} if round_number else {}
                try:
                    with using(**sampling):
                        result = program.invoke(inputs)
                    called.update(step.function for step in result.trace)
                    if not metric_passes(metric, example, result.output, result.trace, self.threshold):
                        continue
                except Exception:  # a run (or its metric) that fails is a run the metric does not accept
                    continue
                return tuple(
                    (step.function, Demo(step.record.inputs, step.record.output, step.record.reasoning))
                    for step in result.trace
                    if step.record.error is None
                )
        return None


# The steps of one passing run: each fuzzy function called, with its call as a demo.
Traced = tuple[tuple["FuzzyFunction[..., Any]", Demo], ...]


def _from_inputs(demo: Demo, inputs: Mapping[str, Any]) -> bool:
    """Whether `demo` was made from an example with these inputs."""
    return all(name in inputs and inputs[name] == value for name, value in demo.inputs.items())


def candidate_ladder(
    program: Program[..., Any],
    trainset: Sequence[Example],
    metric: Metric,
    bootstrapper: BootstrapFewShot,
    budget: Budget,
    rng: random.Random,
    count: int,
    *,
    zero_shot: Mapping[str, Params] | None = None,
) -> Iterator[tuple[str, Mapping[str, Params]]]:
    """The demo-set candidates RandomSearch scores and MIPRO searches over: up to `count` (label, params).

    In order: zero-shot (`zero_shot`; by default the program's parameters as they are), the
    bootstrapper's `max_labeled` labelled demos drawn with its seed, demos bootstrapped in
    training order, then bootstraps over shuffled training sets, each wanting a random number
    of demos in [1, max_demos]: from `rng`, first that number, then the shuffle's seed.

    Built lazily, one rung per step: the budget is checked between rungs, and once it is spent
    the ladder ends (a rung cut short by the budget is still given). The bootstraps share their
    runs: an example run for one rung is not run again for the next.
    """
    runs: dict[int, Traced | None] = {}
    for number in range(count):
        if number and budget.exhausted:
            return
        if number == 0:
            yield "zero-shot", program.params if zero_shot is None else zero_shot
        elif number == 1:
            labelled = labelled_params(program, trainset, bootstrapper.max_labeled, random.Random(bootstrapper.seed))
            warn_unused_labels(
                program, trainset, labelled, what="the labelled candidate", wanted=bootstrapper.max_labeled
            )
            yield "labelled", labelled
        elif number == 2:
            yield "bootstrapped", bootstrapper.bootstrap(program, trainset, metric, budget=budget, runs=runs)
        else:
            size = rng.randint(1, bootstrapper.max_demos)
            shuffle = random.Random(rng.random())
            params = bootstrapper.bootstrap(
                program, trainset, metric, budget=budget, shuffle=shuffle, max_demos=size, runs=runs
            )
            yield f"bootstrapped, shuffled #{number - 2}, {size} demos", params


@dataclass(frozen=True)
class RandomSearch:
    """Several demo sets, each scored on the dev set; the best wins.

    The candidates: zero-shot, labelled demos only, demos bootstrapped in training
    order, then `candidates - 3` bootstraps over shuffled training sets with a random
    number of demos in [1, max_demos]. Stops early when `max_lm_calls` or `max_total_tokens` is spent.

    Cheap where it can be: a candidate with the same demos as one scored before (the labelled
    one of a program whose labels fit no step) takes its score without running. On a dev set of
    at least twice `minibatch` examples, each candidate after zero-shot is first scored on the
    same random `minibatch` of them, and scored in full only when it does at least as well there
    as the best so far; the others are kept with no score (None: not scored in full).
    """

    candidates: int = 8
    max_demos: int = 4
    max_labeled: int = 4
    rounds: int = 1
    threshold: float | None = None
    max_lm_calls: int | None = None
    max_total_tokens: int | None = None
    threads: int = 4
    seed: int = 0
    minibatch: int | None = 16

    def compile(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        devset: Sequence[Example] | None = None,
    ) -> Compiled:
        started = time.perf_counter()
        dev = list(devset if devset is not None else trainset)
        screen = (
            sorted(random.Random(self.seed).sample(range(len(dev)), self.minibatch))
            if self.minibatch and len(dev) >= 2 * self.minibatch
            else None
        )
        best_screened = -1.0  # the best minibatch score so far
        budget = Budget(self.max_lm_calls, self.max_total_tokens)
        bootstrapper = BootstrapFewShot(
            max_demos=self.max_demos,
            max_labeled=self.max_labeled,
            rounds=self.rounds,
            threshold=self.threshold,
            seed=self.seed,
        )
        original = program.params
        ladder = candidate_ladder(
            program, trainset, metric, bootstrapper, budget, random.Random(self.seed), max(self.candidates, 1)
        )
        tried: list[Candidate] = []
        best: Candidate | None = None
        with budget.counting():
            if not budget.exhausted:  # a budget of nothing scores nothing, not even zero-shot
                for number, (label, params) in enumerate(ladder):
                    title = f"candidate {number + 1}/{self.candidates} ({label})"
                    same = next((c for c in tried if dict(c.params) == dict(params)), None)
                    if same is not None:  # the same demos as a candidate scored before: the same score
                        tried.append(Candidate(f"{label} (the same as {same.label})", params, same.score))
                        log.info("%s: the same demos as %s, not scored again", title, same.label)
                        continue
                    try:
                        if screen is not None and number:
                            with program.with_params(params):
                                quick = score_candidate(
                                    program,
                                    [dev[i] for i in screen],
                                    metric,
                                    threads=self.threads,
                                    title=title,
                                    budget=budget,
                                )
                            if quick.score < best_screened:
                                tried.append(
                                    Candidate(
                                        f"{label} (minibatch {quick.score:.1f}: not scored in full)", params, None
                                    )
                                )
                                log.info(
                                    "%s: %.1f on a minibatch of %d, below the best; not scored in full",
                                    title,
                                    quick.score,
                                    len(screen),
                                )
                                continue
                            best_screened = quick.score
                        with program.with_params(params):
                            result = score_candidate(
                                program, dev, metric, threads=self.threads, title=title, budget=budget
                            )
                    except BudgetExhausted as spent:  # cut short: no score over part of the examples
                        tried.append(Candidate(f"{label} (the budget ran out during its evaluation)", params, None))
                        log.info("%s", spent)
                        break
                    score = result.score
                    if screen is not None and not number:
                        best_screened = 100.0 * sum(result.rows[i].score for i in screen) / len(screen)
                    candidate = Candidate(label, params, score)
                    tried.append(candidate)
                    log.info(
                        "%s: %.1f, %d LM calls so far%s%s",
                        title,
                        score,
                        budget.lm_calls,
                        f" (and {budget.cached_calls} from the cache)" if budget.cached_calls else "",
                        describe_errors(result),
                    )
                    if best is None or (best.score is not None and score > best.score):
                        best = candidate  # the first of the best
        if budget.exhausted and tried and len(tried) < max(self.candidates, 1) and (best is None or best is tried[0]):
            warn_budget_ended_search(
                program, "RandomSearch", budget, how_far=f"after {len(tried)} of {self.candidates} candidates"
            )
        return Compiled(
            best.params if best else original,  # nothing scored (no budget): the program as it is
            best.score if best else None,
            tried[0].score if tried else None,  # the baseline: zero-shot
            tuple(tried),
            budget.lm_calls,
            budget.tokens,
            time.perf_counter() - started,
            {"optimizer": "RandomSearch", **asdict(self)},
            budget.cached_calls,
        )
