"""MIPRO: propose instructions, bootstrap demo sets, then search their combinations with Optuna's TPE.

1. Demo-set candidates per fuzzy function: zero-shot, labelled, bootstrapped in
   training order, then bootstraps over shuffled training sets.
2. Instruction candidates per fuzzy function: the docstring, then proposals by a
   (configurable) proposer model that sees the program's source code, a summary
   of the data, successful demos of that function and a randomly drawn tip.
3. Optuna's TPE sampler picks one instruction and one demo set per function per
   trial; a trial is scored on a random minibatch of the dev set; every
   `full_eval_every` trials the combination with the best mean minibatch score is
   scored on the whole dev set. The best full-dev-set combination wins.

The study lives in Optuna storage (`storage=`, e.g. a SQLite URL beside the
artifact), so an interrupted compile resumes where it stopped, and a shared
database URL lets several processes work on one study. Candidates are rebuilt on
resume from the (cached, seeded) LM calls, so they come out the same.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from lmdsl.compiler.base import Budget, BudgetExhausted, Candidate, Compiled, Metric
from lmdsl.compiler.few_shot import BootstrapFewShot, labelled_params
from lmdsl.config import using
from lmdsl.errors import ConfigurationError, LMDSLError
from lmdsl.fuzzy import FuzzyFunction, fuzzy
from lmdsl.prompt import Demo, Params

if TYPE_CHECKING:
    from lmdsl.evaluate import Example
    from lmdsl.program import Program

TIPS = {
    "none": "",
    "creative": "Don't be afraid to be creative when writing the instruction.",
    "simple": "Keep the instruction clear and concise.",
    "description": "Make the instruction informative and descriptive.",
    "high_stakes": "Describe a high-stakes scenario in which the task must be done right.",
    "persona": 'Give the model a persona suited to the task (for example "You are a ...").',
}
MAX_SOURCE_CHARS = 4000
log = logging.getLogger("lmdsl.compiler")


class ProposedInstruction(BaseModel):
    instruction: str = Field(description="the new instruction for this step, one to three sentences")


@functools.cache
def _proposer() -> tuple[FuzzyFunction[..., str], FuzzyFunction[..., ProposedInstruction]]:
    """The fuzzy functions MIPRO itself runs, built on first use (not at import)."""

    def summarize_data(examples: list[str]) -> str:
        """Describe in two or three sentences what these examples of a task have in common:
        their inputs, their answers and any pattern a model should know about."""
        raise NotImplementedError

    def propose_instruction(
        program_code: str,
        data_summary: str,
        step: str,
        current_instruction: str,
        good_examples: list[str],
        tip: str,
    ) -> ProposedInstruction:
        """Write a better instruction for one step of a language-model program, so that the model
        doing that step gets more answers right. Use the program's code, the summary of the data
        and the examples of that step done well."""
        raise NotImplementedError

    return fuzzy(summarize_data), fuzzy(retries=1)(propose_instruction)


@dataclass(frozen=True)
class MIPRO:
    """Instructions and demos per fuzzy function, searched jointly (see the module docstring)."""

    trials: int = 20
    minibatch_size: int = 25
    full_eval_every: int = 5
    instructions: int = 4
    demo_sets: int = 6
    max_demos: int = 4
    max_labeled: int = 4
    proposer: str | None = None
    max_lm_calls: int | None = None
    threads: int = 4
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None

    def compile(
        self, program: Program[..., Any], trainset: Sequence[Example], metric: Metric, *, devset: Sequence[Example] | None = None
    ) -> Compiled:
        try:
            import optuna
        except ImportError:
            raise ConfigurationError("MIPRO needs optuna: pip install 'lmdsl[compile]'") from None

        from lmdsl.evaluate import evaluate

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        started = time.perf_counter()
        dev = list(devset if devset is not None else trainset)
        rng = random.Random(self.seed)
        names = list(program.functions)
        original = program.params
        budget = Budget(self.max_lm_calls)
        tried: list[Candidate] = []
        full: dict[str, float] = {}

        def score(choice: Mapping[str, tuple[int, int]], examples: Sequence[Example]) -> float:
            program.params = self._params(choice, instructions, demo_sets)
            try:
                return evaluate(program, examples, metric, threads=self.threads, progress=False).score
            finally:
                program.params = original

        with budget.counting():
            demo_sets = self._demo_sets(program, trainset, metric, budget, rng)
            log.info("%d demo sets per function, %d LM calls so far", len(demo_sets), budget.lm_calls)
            instructions = self._instructions(program, trainset, demo_sets, rng)
            log.info("instruction candidates: %s", {name: len(texts) for name, texts in instructions.items()})
            baseline_choice = {name: (0, 0) for name in names}
            baseline = score(baseline_choice, dev)
            full[_key(baseline_choice)] = baseline
            tried.append(Candidate("zero-shot, docstrings", self._params(baseline_choice, instructions, demo_sets), baseline))
            study = optuna.create_study(
                direction="maximize",
                sampler=optuna.samplers.TPESampler(seed=self.seed, multivariate=True),
                storage=self.storage,
                study_name=self.study_name or f"lmdsl-{self.seed}",
                load_if_exists=self.storage is not None,
            )
            full.update({k.removeprefix("full:"): v for k, v in study.user_attrs.items() if k.startswith("full:")})
            done = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
            try:
                for number in range(done, self.trials):
                    budget.check()
                    trial = study.ask()
                    choice = {
                        name: (
                            int(trial.suggest_categorical(f"{name}:instruction", list(range(len(instructions[name]))))),
                            int(trial.suggest_categorical(f"{name}:demos", list(range(len(demo_sets))))),
                        )
                        for name in names
                    }
                    batch = dev if len(dev) <= self.minibatch_size else random.Random(self.seed * 7919 + number).sample(dev, self.minibatch_size)
                    value = score(choice, batch)
                    study.tell(trial, value)
                    log.info("trial %d/%d: %.1f on %d examples, %d LM calls so far", number + 1, self.trials, value, len(batch), budget.lm_calls)
                    if (number + 1) % self.full_eval_every == 0 or number + 1 == self.trials:
                        self._full_evaluation(study, full, score, dev)
            except BudgetExhausted:
                pass
        best_key = max(full, key=lambda key: full[key])
        best_choice = {name: tuple(pair) for name, pair in json.loads(best_key).items()}
        for key, value in full.items():
            if key != _key(baseline_choice):
                tried.append(Candidate(f"trial combination {key}", self._params(json.loads(key), instructions, demo_sets), value))
        return Compiled(
            self._params(best_choice, instructions, demo_sets), full[best_key], baseline, tuple(tried),
            budget.lm_calls, budget.tokens, time.perf_counter() - started, {"optimizer": "MIPRO", **asdict(self)},
        )

    def _full_evaluation(self, study: Any, full: dict[str, float], score: Any, dev: Sequence[Example]) -> None:
        """Score on the whole dev set the not-yet-scored combination with the best mean minibatch score."""
        means: dict[str, list[float]] = defaultdict(list)
        for trial in study.trials:
            if trial.value is not None:
                choice: dict[str, list[int]] = {}
                for param, index in trial.params.items():
                    name, _, part = param.rpartition(":")
                    choice.setdefault(name, [0, 0])[0 if part == "instruction" else 1] = int(index)
                means[_key(choice)].append(trial.value)
        pending = [(sum(v) / len(v), k) for k, v in means.items() if k not in full]
        if not pending:
            return
        _, key = max(pending)
        full[key] = score(json.loads(key), dev)
        study.set_user_attr(f"full:{key}", full[key])
        log.info("full evaluation of the best combination so far: %.1f", full[key])

    def _params(
        self, choice: Mapping[str, Sequence[int]], instructions: Mapping[str, list[str]], demo_sets: list[dict[str, tuple[Demo, ...]]]
    ) -> dict[str, Params]:
        return {name: Params(instructions[name][i], demo_sets[d][name]) for name, (i, d) in choice.items()}

    def _demo_sets(
        self, program: Program[..., Any], trainset: Sequence[Example], metric: Metric, budget: Budget, rng: random.Random
    ) -> list[dict[str, tuple[Demo, ...]]]:
        bootstrapper = BootstrapFewShot(self.max_demos, self.max_labeled, 1, None, None, self.seed)
        sets: list[dict[str, tuple[Demo, ...]]] = [{name: () for name in program.functions}]
        for number in range(1, self.demo_sets):
            if budget.exhausted:
                break
            if number == 1:
                params = labelled_params(program, trainset, self.max_labeled, random.Random(self.seed))
            elif number == 2:
                params = bootstrapper.bootstrap(program, trainset, metric, budget=budget)
            else:
                params = bootstrapper.bootstrap(
                    program, trainset, metric, budget=budget,
                    shuffle=random.Random(rng.random()), max_demos=rng.randint(1, self.max_demos),
                )
            sets.append({name: p.demos for name, p in params.items()})
        return sets

    def _instructions(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        demo_sets: list[dict[str, tuple[Demo, ...]]],
        rng: random.Random,
    ) -> dict[str, list[str]]:
        candidates = {name: [fn.params.instructions] for name, fn in program.functions.items()}
        if self.instructions <= 1:
            return candidates
        summarize, propose = _proposer()
        options = {"model": self.proposer} if self.proposer else {}
        source = _source(program)
        sample = [json.dumps(dict(e.fields), ensure_ascii=False, default=str)[:400] for e in list(trainset)[:10]]
        with using(**options):
            try:
                summary = summarize(examples=sample)
            except LMDSLError:
                summary = ""
            for name, fn in program.functions.items():
                shown = next((s[name] for s in demo_sets[2:] if s.get(name)), ())
                examples = [
                    f"{json.dumps(dict(d.inputs), ensure_ascii=False, default=str)} -> {fn.output_format.render(d.output)}"
                    for d in shown[:3]
                ]
                for number in range(1, self.instructions):
                    tip = TIPS[rng.choice(sorted(TIPS))]
                    try:
                        with using(temperature=1.0, rollout=number):
                            proposal = propose(
                                program_code=source, data_summary=summary, step=_describe(name, fn),
                                current_instruction=fn.params.instructions, good_examples=examples, tip=tip,
                            )
                    except LMDSLError:
                        continue
                    text = proposal.instruction.strip()
                    if text and text not in candidates[name]:
                        candidates[name].append(text)
        return candidates


def _key(choice: Mapping[str, Sequence[int]]) -> str:
    return json.dumps({name: list(pair) for name, pair in sorted(choice.items())})


def _describe(name: str, fn: FuzzyFunction[..., Any]) -> str:
    inputs = ", ".join(fn.signature.input_names)
    return f"{name}({inputs}) -> {fn.output_format.shape}"


def _source(program: Program[..., Any]) -> str:
    """The program's code and its fuzzy functions' definitions, for grounding proposals."""
    parts = []
    for obj in (program.__wrapped__, *(fn.__wrapped__ for fn in program.functions.values())):
        try:
            parts.append(inspect.getsource(obj))
        except (OSError, TypeError):
            continue
    return "\n".join(parts)[:MAX_SOURCE_CHARS]
