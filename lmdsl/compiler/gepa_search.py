"""One GEPA compile: the seed, the iterations (reflective mutation and merges), evaluation within
the budgets, and the state saved after each step (see `lmdsl.compiler.gepa`)."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmdsl.compiler.base import score_candidate, with_demos
from lmdsl.compiler.few_shot import BootstrapFewShot, candidate_ladder
from lmdsl.compiler.gepa_budget import Meter, Stop, counting
from lmdsl.compiler.gepa_pool import (
    Member,
    State,
    digest,
    load_state,
    merge_subsample,
    merge_triplet,
    merged,
    select_parent,
)
from lmdsl.compiler.gepa_reflection import describe_step, fit, records, reflector, short
from lmdsl.config import intercepting, settings, using
from lmdsl.errors import ConfigurationError, LMDSLError
from lmdsl.evaluation.results import EvaluationRow
from lmdsl.files import write_atomic
from lmdsl.params import Params, dump_demos, load_demos
from lmdsl.scores import Metric

if TYPE_CHECKING:
    from lmdsl.compiler.gepa import GEPA
    from lmdsl.data import Example
    from lmdsl.program import Program

log = logging.getLogger("lmdsl.compiler")
MERGE_SUBSAMPLE = 5
_SETUP_SETTINGS = ("minibatch_size", "component", "demo_sets", "max_demos", "seed")  # budgets and merging may change


class Search:
    """One GEPA compile: its state, its meter, and the steps of an iteration."""

    def __init__(
        self, gepa: GEPA, program: Program[..., Any], train: list[Example], val: list[Example], metric: Metric
    ) -> None:
        self.gepa, self.program, self.train, self.val, self.metric = gepa, program, train, val, metric
        self.names = list(program.functions)  # fixed now: a run may find more functions
        self.path = Path(gepa.state_file) if gepa.state_file is not None else None
        model = settings().model_for(None)
        setup = {
            "functions": {name: fn.signature.fingerprint for name, fn in program.functions.items()},
            "docstrings": {name: fn.params.instructions for name, fn in program.functions.items()},
            "train": [dict(e.fields) for e in train],
            "val": [dict(e.fields) for e in val],
            "model": model if isinstance(model, str) else model.name,
            "reflection_model": gepa.reflection_model,
            "settings": {k: v for k, v in asdict(gepa).items() if k in _SETUP_SETTINGS},
        }
        self.setup = digest(setup)
        loaded = None if self.path is None else load_state(self.path, self.setup, self.names, len(val), len(train))
        self.resumed = loaded is not None
        self.state = loaded or State(self.setup, [], {}, rng=random.Random(gepa.seed).getstate())
        self.rng = random.Random()
        self.rng.setstate(self.state.rng)
        self.meter = Meter(gepa.max_lm_calls, gepa.max_total_tokens, self.state.spent)
        self.metric_calls = int(self.state.spent.get("metric_calls", 0))
        self.seconds_before = float(self.state.spent.get("seconds", 0.0))
        self.started = time.perf_counter()
        self.committed = self.state.to_json() if loaded is not None else None
        self.demos = {
            name: load_demos(fn.signature, self.state.demos.get(name, [])) for name, fn in program.functions.items()
        }
        self.lock = threading.Lock()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        if self.resumed:
            log.info("GEPA: resuming at iteration %d with %d candidates; %s", *self._resume_note())
        with intercepting(self.meter.wrap):
            try:
                if not self.state.members:
                    self._seed()
                    self._commit()
                while True:
                    self.state.iteration += 1
                    self._iterate()
                    self._commit()
            except Stop as stop:
                log.info("GEPA stops: %s; %s", stop, self.spent_text())
                self._save_spent()
                if self.committed is not None:  # the iteration cut short does not count
                    self.state.iteration = int(json.loads(self.committed)["iteration"])

    def _resume_note(self) -> tuple[int, int, str]:
        return self.state.iteration + 1, len(self.state.members), self.spent_text()

    def _seed(self) -> None:
        """Member 0: the docstrings, over no demos or the best demo set of the candidate ladder."""
        instructions = {name: fn.params.instructions for name, fn in self.program.functions.items()}
        demos = {name: () for name in self.names}
        if self.gepa.demo_sets > 0:
            demos, scores = self._choose_demos()
        else:
            scores = self._score(instructions, demos, self.val, "seed: the docstrings")
        self.demos = {name: tuple(d) for name, d in demos.items()}
        self.state.demos = {
            name: dump_demos(self.program.functions[name].signature, self.demos[name]) for name in self.names
        }
        self.state.members.append(Member(instructions, (), tuple(scores), 0, "seed"))
        log.info(
            "GEPA seed: %.1f on %d validation examples; %s",
            100 * self.state.members[0].mean,
            len(self.val),
            self.spent_text(),
        )

    def _choose_demos(self) -> tuple[dict[str, Any], list[float]]:
        """Score demo sets of the candidate ladder on the validation set; the best is GEPA's base."""
        gepa = self.gepa
        bootstrapper = BootstrapFewShot(max_demos=gepa.max_demos, max_labeled=gepa.max_demos, seed=gepa.seed)
        no_demos = {name: with_demos(fn, ()) for name, fn in self.program.functions.items()}
        counted = counting(self.metric, self._count_metric)
        ladder = candidate_ladder(
            self.program, self.train, counted, bootstrapper, self.meter, self.rng, gepa.demo_sets, zero_shot=no_demos
        )
        docstrings = {name: p.instructions for name, p in no_demos.items()}
        chosen: tuple[dict[str, Any], list[float]] | None = None
        for rung in range(gepa.demo_sets):
            try:  # a bootstrapped rung may make a metric call per training example, then it is scored
                self._afford(len(self.val) + (len(self.train) if rung >= 2 else 0))
                label, params = next(ladder)
                demos = {name: params[name].demos for name in self.names}
                scores = self._score(docstrings, demos, self.val, f"demo set {label}")
            except StopIteration:
                break
            except Stop:
                if chosen is None:
                    raise
                break
            log.info("GEPA demo set %s: %.1f; %s", label, 100 * sum(scores) / len(scores), self.spent_text())
            if chosen is None or sum(scores) > sum(chosen[1]):
                chosen = demos, scores
        if chosen is None:
            raise Stop("the budget ran out before a demo set was scored")
        return chosen

    def _iterate(self) -> None:
        state, gepa = self.state, self.gepa
        if gepa.merge and state.merges_due > 0 and state.merges_done < gepa.max_merges and self._merge():
            return
        parent_index = select_parent(state.members, self.rng)
        parent = state.members[parent_index]
        batch = self._minibatch()
        self._afford(2 * len(batch))
        parent_rows = self._rows(parent.instructions, batch, f"iteration {state.iteration}: parent #{parent_index}")
        parent_sum = sum(row.score for row in parent_rows)
        if all(row.score >= 1.0 for row in parent_rows):
            log.info(
                "iteration %d: parent #%d is perfect on its minibatch; %s",
                state.iteration,
                parent_index,
                self.spent_text(),
            )
            return
        turn = state.next_component.get(parent_index, 0)
        state.next_component[parent_index] = turn + 1
        targets = self.names if gepa.component == "all" else [self.names[turn % len(self.names)]]
        child = dict(parent.instructions)
        for name in targets:
            proposal = self._reflect(name, parent.instructions[name], parent_rows)
            if proposal is not None:
                child[name] = proposal
        if child == dict(parent.instructions):
            log.info(
                "iteration %d: no new instruction for %s; %s", state.iteration, ", ".join(targets), self.spent_text()
            )
            return
        child_rows = self._rows(child, batch, f"iteration {state.iteration}: child of #{parent_index}")
        child_sum = sum(row.score for row in child_rows)
        proposed = "; ".join(f"{n}: {short(child[n])}" for n in targets if child[n] != parent.instructions[n])
        if child_sum <= parent_sum:
            log.info(
                "iteration %d: rejected (%.2f vs the parent's %.2f on %d examples) %s; %s",
                state.iteration, child_sum, parent_sum, len(batch), proposed, self.spent_text(),
            )  # fmt: skip
            return
        self._afford(len(self.val))
        scores = self._score(child, self.demos, self.val, f"iteration {state.iteration}: new candidate")
        origin = f"reflection on {', '.join(targets)}"
        state.members.append(
            Member(child, (parent_index,), tuple(scores), state.iteration, origin, (parent_sum, child_sum))
        )
        state.merges_due += 1
        log.info(
            "iteration %d: accepted #%d (%.2f vs %.2f on the minibatch), %.1f on validation, %s; %s",
            state.iteration, len(state.members) - 1, child_sum, parent_sum, 100 * state.members[-1].mean, proposed,
            self.spent_text(),
        )  # fmt: skip

    def _merge(self) -> bool:
        """One merge attempt; False when no pair qualifies (the iteration then reflects instead)."""
        state = self.state
        triplet = merge_triplet(state.members, self.rng, state.merges_tried)
        if triplet is None:
            return False
        i, j, a = triplet
        state.merges_due -= 1
        state.merges_tried.append(triplet)
        instructions = merged(state.members, i, j, a)
        if any(dict(m.instructions) == instructions for m in state.members):
            return False
        ids = merge_subsample(state.members, i, j, self.rng, MERGE_SUBSAMPLE)
        self._afford(len(ids))
        sub = self._score(instructions, self.demos, [self.val[k] for k in ids], f"iteration {state.iteration}: merge")
        bar = max(sum(state.members[p].scores[k] for k in ids) for p in (i, j))
        if sum(sub) < bar:
            log.info(
                "iteration %d: merge of #%d and #%d rejected (%.2f < %.2f); %s",
                state.iteration,
                i,
                j,
                sum(sub),
                bar,
                self.spent_text(),
            )
            return True
        rest = [k for k in range(len(self.val)) if k not in ids]
        self._afford(len(rest))
        scores = dict(zip(ids, sub))
        if rest:
            scores.update(
                zip(rest, self._score(instructions, self.demos, [self.val[k] for k in rest], "merge: the rest"))
            )
        state.members.append(
            Member(
                instructions,
                (i, j),
                tuple(scores[k] for k in range(len(self.val))),
                state.iteration,
                f"merge of #{i} and #{j}",
            )
        )
        state.merges_done += 1
        log.info(
            "iteration %d: merged #%d and #%d into #%d, %.1f on validation; %s",
            state.iteration,
            i,
            j,
            len(state.members) - 1,
            100 * state.members[-1].mean,
            self.spent_text(),
        )
        return True

    # -- reflection -------------------------------------------------------------------------

    def _reflect(self, name: str, instruction: str, rows: Sequence[EvaluationRow]) -> str | None:
        """A new instruction for `name` from the reflection model, or None (no records, no room, no reply)."""
        fn = self.program.functions[name]
        found = [text for row in rows for text in records(fn, row)]
        if not found:
            return None
        inputs = fit(instruction, describe_step(name, fn), found, self.gepa.max_reflection_chars)
        if inputs is None:
            log.info("GEPA: the instruction of %s alone fills max_reflection_chars; no reflection", name)
            return None
        options: dict[str, Any] = {"temperature": self.gepa.reflection_temperature, "rollout": self.state.iteration}
        if self.gepa.reflection_model is not None:
            options["model"] = self.gepa.reflection_model
        try:
            with using(**options):
                proposal = reflector()(**inputs)
        except LMDSLError as error:
            self._check_meter()
            log.info("GEPA: the reflection on %s failed (%s)", name, str(error)[:200])
            return None
        text = proposal.instruction.strip()
        return text if text and text != instruction else None

    # -- evaluation and budget --------------------------------------------------------------

    def _params(self, instructions: Mapping[str, str], demos: Mapping[str, Any]) -> dict[str, Params]:
        return {name: Params(instructions[name], tuple(demos.get(name, ()))) for name in self.names}

    def _rows(
        self, instructions: Mapping[str, str], examples: Sequence[Example], title: str
    ) -> tuple[EvaluationRow, ...]:
        """Run a candidate on examples (paid for with `_afford` beforehand); each is one metric call."""
        with self.program.with_params(self._params(instructions, self.demos)):
            result = score_candidate(self.program, examples, self.metric, threads=self.gepa.threads, title=title)
        self._count_metric(len(result.rows))
        self._check_meter()
        if all((row.error or "").startswith("metric: ") for row in result.rows):
            first = result.rows[0]
            raise ConfigurationError(
                f"GEPA: the metric failed on every example ({first.describe_error()}); a metric returns a bool, "
                "a number in [0, 1] or lmdsl.Score(value, feedback=...): fix it and compile again"
            )
        return result.rows

    def _score(
        self, instructions: Mapping[str, str], demos: Mapping[str, Any], examples: Sequence[Example], title: str
    ) -> list[float]:
        saved, self.demos = self.demos, dict(demos)
        try:
            return [row.score for row in self._rows(instructions, examples, title)]
        finally:
            self.demos = saved

    def _count_metric(self, calls: int) -> None:
        with self.lock:
            self.metric_calls += calls

    def _check_meter(self) -> None:
        if self.meter.refused:
            raise Stop("the model budget ran out during an evaluation (its scores are not used)")

    def _afford(self, calls: int) -> None:
        """Stop before an evaluation of `calls` rollouts the metric budget cannot pay for."""
        self._check_meter()
        limit = self.gepa.max_metric_calls
        if self.meter.exhausted:
            raise Stop("the model budget is spent")
        if limit is not None and self.metric_calls + calls > limit:
            raise Stop(f"{limit - self.metric_calls} metric call(s) left, the next step needs {calls}")

    def _minibatch(self) -> list[Example]:
        """The next `minibatch_size` training examples of an order reshuffled every epoch."""
        state, size = self.state, min(self.gepa.minibatch_size, len(self.train))
        chosen: list[int] = []
        while len(chosen) < size:
            if state.train_position >= len(state.train_order):
                state.train_order = list(range(len(self.train)))
                self.rng.shuffle(state.train_order)
                state.train_position = 0
            index = state.train_order[state.train_position]
            state.train_position += 1
            if index not in chosen:
                chosen.append(index)
        return [self.train[i] for i in chosen]

    # -- persistence and the result ---------------------------------------------------------

    def spent(self) -> dict[str, float]:
        return {
            "metric_calls": self.metric_calls,
            "lm_calls": self.meter.lm_calls,
            "tokens": self.meter.tokens,
            "cached_calls": self.meter.cached_calls,
            "seconds": round(self.seconds_before + time.perf_counter() - self.started, 2),
        }

    def spent_text(self) -> str:
        gepa, spent = self.gepa, self.spent()

        def of(value: float, limit: int | None) -> str:
            return f"{int(value)}/{limit}" if limit is not None else f"{int(value)}"

        return (
            f"spent {of(spent['metric_calls'], gepa.max_metric_calls)} metric calls, "
            f"{of(spent['lm_calls'], gepa.max_lm_calls)} LM calls, {of(spent['tokens'], gepa.max_total_tokens)} tokens"
        )

    def _commit(self) -> None:
        """Save the state after a finished step, with the spent budget so far."""
        self.state.rng = self.rng.getstate()
        self.state.spent = self.spent()
        self.committed = self.state.to_json()
        if self.path is not None:
            self.state.save(self.path)

    def _save_spent(self) -> None:
        """On a budget stop: the last finished iteration's state, with everything spent since counted."""
        if self.committed is None or self.path is None:
            return
        data = json.loads(self.committed)
        data["spent"] = self.spent()
        write_atomic(self.path, json.dumps(data, ensure_ascii=False))

    def params(self, instructions: Mapping[str, str]) -> dict[str, Params]:
        return self._params(instructions, self.demos)
