"""GEPA: reflective evolution of instructions, driven by the metric's textual feedback.

After the algorithm of Agrawal et al. (arXiv 2507.19457) and its reference implementation:

1. The seed candidate (the docstrings, over the demo set chosen first when `demo_sets` > 0) is
   scored on every validation example.
2. Each iteration draws a parent from the per-example Pareto front (non-dominated members,
   weighted by how many examples they win), picks one fuzzy function (round-robin per parent,
   or all), runs the parent on a training minibatch, and shows a reflection model, through a
   typed fuzzy function of lmdsl's own, what that function was given, what it answered and the
   feedback (`lmdsl.Score` feedback, rejected replies, failed checks, errors). Its proposal is
   run on the same minibatch and kept only if it scores strictly higher; a kept child is then
   scored on the whole validation set and joins the pool.
3. With `merge=True`, after a new member is found, two non-dominated members that descend from
   a common ancestor are merged (per function, the side that changed it), judged on a few
   validation examples where they differ, and kept when at least as good as both.

Budgets are exact: `max_metric_calls` counts every rollout scored (each example of each
evaluation, a failed run included, and each metric call bootstrapping makes) and is checked
before each evaluation starts; `max_lm_calls` is enforced at the model boundary (a call that
would exceed it is refused, reflection calls included); `max_total_tokens` refuses new calls
once reached, so it can be passed by the calls already under way (at most `threads`). The
reflection prompt is never longer than `max_reflection_chars`: examples are cut, then dropped.

The state (pool, scores, fronts, random state, spent budget) is saved after every iteration in
`state_file` (by default beside the artifact), so a killed compile resumes at the iteration it
reached; calls of an iteration cut short by the kill are not in the saved count.

The rooms: this module (settings, the up-front budget check, the result), `gepa_search` (the
loop), `gepa_pool` (pool, fronts, merges, the state file), `gepa_reflection` (the reflecting
fuzzy function and what it is shown), `gepa_budget` (the meter).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmdsl.compiler.base import Candidate, Compiled
from lmdsl.compiler.gepa_pool import best, lineage
from lmdsl.compiler.gepa_search import Search
from lmdsl.errors import ConfigurationError
from lmdsl.scores import Metric

if TYPE_CHECKING:
    from lmdsl.data import Example
    from lmdsl.program import Program

MIN_PROPOSALS = 3  # the smallest metric budget must let this many proposals be judged


@dataclass(frozen=True)
class GEPA:
    """Reflective prompt evolution (see the module docstring). Set at least one budget."""

    max_metric_calls: int | None = None
    max_lm_calls: int | None = None
    max_total_tokens: int | None = None
    minibatch_size: int = 3
    component: Literal["round_robin", "all"] = "round_robin"
    merge: bool = False
    max_merges: int = 5
    demo_sets: int = 0
    max_demos: int = 4
    reflection_model: str | None = None
    reflection_temperature: float = 1.0
    max_reflection_chars: int = 12000
    threads: int = 4
    seed: int = 0
    state_file: str | Path | None = None

    def resuming_beside(self, artifact: Path) -> GEPA:
        """This optimizer with its state in a file beside `artifact`, unless `state_file` says where."""
        if self.state_file is not None:
            return self
        return replace(self, state_file=artifact.with_name(artifact.name + ".gepa.json"))

    def minimum_metric_calls(self, validation: int, train: int) -> int:
        """The smallest `max_metric_calls` that scores the seed and judges `MIN_PROPOSALS` proposals
        (each run twice on a minibatch), one of them then scored on the whole validation set."""
        seed = validation if self.demo_sets <= 0 else self.demo_sets * validation + max(0, self.demo_sets - 2) * train
        return seed + MIN_PROPOSALS * 2 * min(self.minibatch_size, train) + validation

    def _validate(self, validation: int, train: int) -> None:
        for name in ("max_metric_calls", "max_lm_calls", "max_total_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigurationError(f"GEPA: {name} must be a whole number >= 1 or None, not {value!r}")
        if self.max_metric_calls is None and self.max_lm_calls is None and self.max_total_tokens is None:
            raise ConfigurationError(
                "GEPA needs a budget: set max_metric_calls (at least "
                f"{self.minimum_metric_calls(validation, train)} for this data), max_lm_calls or max_total_tokens"
            )
        if not isinstance(self.minibatch_size, int) or self.minibatch_size < 1:
            raise ConfigurationError(f"GEPA: minibatch_size must be a whole number >= 1, not {self.minibatch_size!r}")
        if self.component not in ("round_robin", "all"):
            raise ConfigurationError(f"GEPA: component must be 'round_robin' or 'all', not {self.component!r}")
        if self.max_reflection_chars < 1000:
            raise ConfigurationError("GEPA: max_reflection_chars must be at least 1000 (the prompt's own text)")
        if self.max_lm_calls is not None and self.max_lm_calls < validation + MIN_PROPOSALS:
            raise ConfigurationError(
                f"GEPA: max_lm_calls={self.max_lm_calls} cannot even score the seed on {validation} validation "
                f"example(s) (a call each) and reflect {MIN_PROPOSALS} times; raise it to at least "
                f"{validation + MIN_PROPOSALS} (calls the cache answers are free, so a larger limit costs nothing then)"
            )
        least = self.minimum_metric_calls(validation, train)
        if self.max_metric_calls is not None and self.max_metric_calls < least:
            seed = "scoring the seed" if self.demo_sets <= 0 else f"choosing among {self.demo_sets} demo sets"
            raise ConfigurationError(
                f"GEPA: max_metric_calls={self.max_metric_calls} is too small to judge {MIN_PROPOSALS} proposals: "
                f"{seed} on {validation} validation example(s), {MIN_PROPOSALS} proposals run twice on a minibatch "
                f"of {min(self.minibatch_size, train)}, and one accepted proposal scored on the validation set "
                f"take at least {least}; raise it to {least} or more (or use fewer validation examples)"
            )

    def compile(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        devset: Sequence[Example] | None = None,
    ) -> Compiled:
        started = time.perf_counter()
        train, val = list(trainset), list(devset if devset is not None else trainset)
        if not train or not val:
            raise ConfigurationError("GEPA needs training examples (and a validation set, or it uses them)")
        self._validate(len(val), len(train))
        if not program.functions:
            raise ConfigurationError(
                f"GEPA: {program.name} calls no fuzzy function, so it has no instruction to evolve"
            )
        search = Search(self, program, train, val, metric)
        search.run()
        return self._compiled(search, time.perf_counter() - started)

    def _compiled(self, search: Search, seconds: float) -> Compiled:
        """The member with the best mean validation score, every member as a candidate, the spent
        budget and the winner's lineage in the settings (the artifact's `optimizer`)."""
        members, meter = search.state.members, search.meter
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        settings.update(
            optimizer="GEPA", spent=search.spent(), iterations=search.state.iteration, candidates=len(members)
        )
        if not members:  # the budget ran out before the seed was scored: the program as it is
            params = {name: fn.params for name, fn in search.program.functions.items()}
            settings.update(lineage=[])
            return Compiled(params, None, None, (), meter.lm_calls, meter.tokens, seconds, settings, meter.cached_calls)
        winner = best(members)
        settings.update(lineage=lineage(members, winner))
        tried = tuple(
            Candidate(f"#{i} {m.origin} (iteration {m.iteration})", search.params(m.instructions), 100 * m.mean)
            for i, m in enumerate(members)
        )
        return Compiled(
            search.params(members[winner].instructions),
            100 * members[winner].mean,
            100 * members[0].mean,
            tried,
            meter.lm_calls,
            meter.tokens,
            seconds,
            settings,
            meter.cached_calls,
        )
