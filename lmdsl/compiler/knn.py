"""`KNNFewShot`: demos chosen per call, from a pool fixed when compiling.

Every fuzzy function gets a pool of demos (its labelled training examples, and, with
`bootstrap=True`, the steps of the program's passing runs, so intermediate steps get pools
too); at call time the `k` demos whose inputs are nearest to the call's (BM25 over the
inputs as the prompt renders them) are shown. The pool goes into the artifact
(`Params.nearest`), so a compiled program chooses the same way wherever it runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lmdsl.compiler.base import Budget, Candidate, Compiled, describe_errors, score_candidate
from lmdsl.compiler.few_shot import BootstrapFewShot, labelled_params, log
from lmdsl.errors import ConfigurationError
from lmdsl.params import MAX_NEAREST_K, Demo, Nearest, Params
from lmdsl.scores import Metric

if TYPE_CHECKING:
    from lmdsl.data import Example
    from lmdsl.program import Program


@dataclass(frozen=True)
class KNNFewShot:
    """`k` demos per call, the nearest to its inputs of a pool of up to `max_pool` per function.

    The pool: labelled demos from the training set, plus (`bootstrap=True`) demos from runs
    the metric accepts (LM calls, within `max_lm_calls` / `max_total_tokens`). Zero-shot and
    the per-call demos are each scored on the dev set (the training set without one), and the
    better is kept.
    """

    k: int = 4
    max_pool: int = 200
    bootstrap: bool = False
    threshold: float | None = None
    max_lm_calls: int | None = None
    max_total_tokens: int | None = None
    threads: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if type(self.k) is not int or not 1 <= self.k <= MAX_NEAREST_K:
            raise ConfigurationError(f"KNNFewShot: k must be a whole number in 1..{MAX_NEAREST_K}, not {self.k!r}")
        if type(self.max_pool) is not int or self.max_pool < 1:
            raise ConfigurationError(f"KNNFewShot: max_pool must be a whole number >= 1, not {self.max_pool!r}")

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
        budget = Budget(self.max_lm_calls, self.max_total_tokens)
        original = program.params
        pools: dict[str, list[Demo]] = {
            name: list(p.demos) for name, p in labelled_params(program, trainset, self.max_pool, None).items()
        }
        tried: list[Candidate] = []
        with budget.counting():
            if self.bootstrap and not budget.exhausted:
                bootstrapper = BootstrapFewShot(
                    max_demos=self.max_pool, max_labeled=0, threshold=self.threshold, seed=self.seed
                )
                for name, found in bootstrapper.bootstrap(program, trainset, metric, budget=budget).items():
                    pools[name].extend(d for d in found.demos if d not in pools[name])
            chosen = {
                name: Params(original[name].instructions, (), Nearest(self.k, tuple(pool[: self.max_pool])))
                if pool
                else original[name]
                for name, pool in pools.items()
            }
            for label, params in (("zero-shot", original), (f"{self.k} nearest demos per call", chosen)):
                if budget.exhausted:
                    break
                with program.with_params(params):
                    result = score_candidate(program, dev, metric, threads=self.threads, title=label)
                tried.append(Candidate(label, params, result.score))
                log.info(
                    "%s: %.1f, %d LM calls so far%s", label, result.score, budget.lm_calls, describe_errors(result)
                )
        best = max(tried, key=lambda c: c.score or 0.0, default=None)
        if best is not None and tried[0].score is not None and (best.score or 0.0) <= tried[0].score:
            best = tried[0]  # a tie keeps the program as it was
        return Compiled(
            best.params if best else chosen,
            best.score if best else None,
            tried[0].score if tried else None,
            tuple(tried),
            budget.lm_calls,
            budget.tokens,
            time.perf_counter() - started,
            {"optimizer": "KNNFewShot", **asdict(self)},
            budget.cached_calls,
        )
