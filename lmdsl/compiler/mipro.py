"""MIPRO: propose instructions, bootstrap demo sets, then search their combinations with Optuna's TPE.

1. Demo-set candidates per fuzzy function: zero-shot, labelled, bootstrapped in
   training order, then bootstraps over shuffled training sets (the candidate
   ladder RandomSearch also climbs: `few_shot.candidate_ladder`).
2. Instruction candidates per fuzzy function: the docstring, then proposals by a
   (configurable) proposer model that sees the program's source code, a summary
   of the data, successful demos of that function and a randomly drawn tip.
3. Optuna's TPE sampler picks one instruction and one demo set per function per
   trial; a trial is scored on a random minibatch of the dev set; every
   `full_eval_every` trials the combination with the best mean minibatch score is
   scored on the whole dev set. The best full-dev-set combination wins.

The study lives in Optuna storage (`storage=`, e.g. a SQLite URL beside the
artifact), so an interrupted compile resumes where it stopped, and a shared
database URL lets several processes work on one study: it holds the candidates
(proposed once, by whichever worker got there first), every trial tagged with
its worker, and the full-dev-set scores, and each worker stops when the study
has `trials` completed trials. Its default name carries a digest of the program's
signatures, the data, the model and the settings that shape the candidates, so a
changed program starts a new study rather than resuming a stale one.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import random
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from lmdsl.calls.function import FuzzyFunction, fuzzy
from lmdsl.compiler.base import (
    Budget,
    BudgetExhausted,
    Candidate,
    Compiled,
    score_candidate,
    warn_budget_ended_search,
    with_demos,
)
from lmdsl.compiler.few_shot import BootstrapFewShot, candidate_ladder
from lmdsl.config import settings, using
from lmdsl.errors import ArtifactError, ConfigurationError, LMDSLError
from lmdsl.params import Demo, Params, dump_demos, load_demos
from lmdsl.scores import Metric

if TYPE_CHECKING:
    from lmdsl.config import ModelSpec
    from lmdsl.data import Example
    from lmdsl.program import Program

    # a choice (instruction and demo-set indices, by function) of these candidates, scored on these examples
    Scoring = Callable[[Mapping[str, Sequence[int]], Sequence[Example], "_Candidates", str], float]

TIPS = {
    "none": "",
    "creative": "Don't be afraid to be creative when writing the instruction.",
    "simple": "Keep the instruction clear and concise.",
    "description": "Make the instruction informative and descriptive.",
    "high_stakes": "Describe a high-stakes scenario in which the task must be done right.",
    "persona": 'Give the model a persona suited to the task (for example "You are a ...").',
}
MAX_SOURCE_CHARS = 4000
SQLITE_WAIT_SECONDS = 120
_SETUP_SETTINGS = frozenset({"minibatch_size", "instructions", "demo_sets", "max_demos", "max_labeled", "seed"})
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


def _optuna() -> Any:
    """Optuna, imported on first use (it is an optional dependency), with its per-trial logging quiet."""
    try:
        import optuna
    except ImportError:
        raise ConfigurationError("MIPRO needs optuna: pip install 'lmdsl[compile]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


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
    max_total_tokens: int | None = None
    threads: int = 4
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None

    def resuming_beside(self, artifact: Path) -> MIPRO:
        """This optimizer with its study in an SQLite file beside `artifact`, unless `storage` says where."""
        if self.storage is not None:
            return self
        return replace(self, storage=f"sqlite:///{artifact.with_name(artifact.name + '.optuna.sqlite3').resolve()}")

    def compile(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        *,
        devset: Sequence[Example] | None = None,
    ) -> Compiled:
        optuna = _optuna()
        started = time.perf_counter()
        dev = list(devset if devset is not None else trainset)
        names = list(program.functions)  # fixed now: a run may find more functions
        zero_shot = {name: (0, 0) for name in names}  # the docstrings and no demos
        budget = Budget(self.max_lm_calls, self.max_total_tokens)
        study = self._study(optuna, program, trainset, dev)

        def score(
            choice: Mapping[str, Sequence[int]], examples: Sequence[Example], candidates: _Candidates, title: str
        ) -> float:
            with program.with_params(self._params(choice, candidates)):
                return score_candidate(program, examples, metric, threads=self.threads, title=title).score

        with budget.counting():
            stored = _Candidates.stored(study, program)
            candidates = (
                stored
                if stored is not None
                else self._candidates(program, trainset, metric, budget).share(study, program)
            )
            baseline = self._baseline(study, candidates, score, dev, zero_shot)
            candidates = self._search(optuna, study, program, names, candidates, score, dev, budget)
        compiled = self._compiled(study, candidates, zero_shot, baseline, budget, started)
        if budget.exhausted and len(compiled.candidates) == 1:
            warn_budget_ended_search(
                program, "MIPRO", budget, how_far="before any trial's combination was scored on the whole dev set"
            )
        return compiled

    def _baseline(
        self,
        study: Any,
        candidates: _Candidates,
        score: Scoring,
        dev: Sequence[Example],
        zero_shot: Mapping[str, Sequence[int]],
    ) -> float:
        """Zero-shot's score on the whole dev set: read from the study, or scored once and kept there."""
        baseline = candidates.full_scores(study).get(_key(zero_shot))
        if baseline is None:
            baseline = score(zero_shot, dev, candidates, "zero-shot")
            study.set_user_attr(candidates.full_attr(_key(zero_shot)), baseline)
        return baseline

    def _search(
        self,
        optuna: Any,
        study: Any,
        program: Program[..., Any],
        names: Sequence[str],
        candidates: _Candidates,
        score: Scoring,
        dev: Sequence[Example],
        budget: Budget,
    ) -> _Candidates:
        """Trials until the study has `trials` completed ones, a full evaluation every `full_eval_every`
        trials and one after the last; stops early when the budget is spent. Returns the candidates
        searched last (another worker may have replaced those it started with)."""
        try:
            while (done := _completed(optuna, study)) < self.trials:
                budget.check()
                candidates = candidates.current(study, program)
                # a sampler seeded by the coming trial's number (its count of trials so far), not one per
                # process: workers sharing the study, all with this seed, would draw the same combinations
                # during TPE's random start-up, each repeating the others' trials
                study.sampler = _sampler(optuna, self.seed * 7919 + len(study.get_trials(deepcopy=False)))
                value, size = self._trial(study, names, candidates, score, dev)
                log.info(
                    "trial %d/%d: %.1f on %d examples, %d LM calls so far",
                    done + 1,
                    self.trials,
                    value,
                    size,
                    budget.lm_calls,
                )
                if (done + 1) % self.full_eval_every == 0 and done + 1 < self.trials:
                    self._full_evaluation(study, candidates, score, dev)
            self._full_evaluation(study, candidates, score, dev)
        except BudgetExhausted:
            pass
        return candidates

    def _trial(
        self, study: Any, names: Sequence[str], candidates: _Candidates, score: Scoring, dev: Sequence[Example]
    ) -> tuple[float, int]:
        """One trial: TPE picks an instruction and a demo set per function, scored on a seeded
        minibatch of the dev set (the whole dev set when it is no larger). Its score and batch size."""
        trial = study.ask()
        trial.set_user_attr("candidates", candidates.digest)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        choice = {
            name: (
                int(trial.suggest_categorical(f"{name}:instruction", list(range(len(candidates.instructions[name]))))),
                int(trial.suggest_categorical(f"{name}:demos", list(range(len(candidates.demo_sets))))),
            )
            for name in names
        }
        batch = (
            dev
            if len(dev) <= self.minibatch_size
            else random.Random(self.seed * 7919 + trial.number).sample(dev, self.minibatch_size)
        )
        value = score(choice, batch, candidates, f"trial {trial.number + 1}")
        study.tell(trial, value)
        return value, len(batch)

    def _compiled(
        self,
        study: Any,
        candidates: _Candidates,
        zero_shot: Mapping[str, Sequence[int]],
        baseline: float,
        budget: Budget,
        started: float,
    ) -> Compiled:
        """The best combination scored on the whole dev set, and every one so scored, zero-shot first."""
        full = candidates.full_scores(study)
        full.setdefault(_key(zero_shot), baseline)  # zero-shot is the same choice under any candidates
        best_key = max(full, key=lambda key: full[key])
        tried = [Candidate("zero-shot, docstrings", self._params(zero_shot, candidates), baseline)]
        for key, value in full.items():
            if key != _key(zero_shot):
                tried.append(Candidate(f"trial combination {key}", self._params(json.loads(key), candidates), value))
        return Compiled(
            self._params(json.loads(best_key), candidates),
            full[best_key],
            baseline,
            tuple(tried),
            budget.lm_calls,
            budget.tokens,
            time.perf_counter() - started,
            {"optimizer": "MIPRO", **asdict(self)},
            budget.cached_calls,
        )

    def _candidates(
        self, program: Program[..., Any], trainset: Sequence[Example], metric: Metric, budget: Budget
    ) -> _Candidates:
        rng = random.Random(self.seed)
        demo_sets = self._demo_sets(program, trainset, metric, budget, rng)
        log.info("%d demo sets per function, %d LM calls so far", len(demo_sets), budget.lm_calls)
        instructions = self._instructions(program, trainset, demo_sets, rng)
        log.info("instruction candidates: %s", {name: len(texts) for name, texts in instructions.items()})
        return _Candidates.of(program, instructions, demo_sets)

    def _study(
        self, optuna: Any, program: Program[..., Any], trainset: Sequence[Example], dev: Sequence[Example]
    ) -> Any:
        """Create or load the study for exactly this program, data, model and settings.

        The default name carries a digest of all of them, so a changed docstring or data set starts
        a new study instead of resuming one whose trials meant other candidates; a study named
        explicitly must match what it was started with.
        """
        setup = {
            "functions": {name: fn.signature.fingerprint for name, fn in program.functions.items()},
            "trainset": [dict(getattr(e, "fields", e)) for e in trainset],
            "devset": [dict(getattr(e, "fields", e)) for e in dev],
            "model": _model_name(settings().model_for(None)),
            "proposer": self.proposer,
            "settings": {k: v for k, v in asdict(self).items() if k in _SETUP_SETTINGS},
        }
        digest = hashlib.sha256(json.dumps(setup, sort_keys=True, default=repr).encode()).hexdigest()[:16]
        with _creating(optuna, self.storage) as storage:
            study = optuna.create_study(
                direction="maximize",
                sampler=_sampler(optuna, self.seed),
                storage=storage,
                study_name=self.study_name or f"{program.name}-{digest}",
                load_if_exists=storage is not None,
            )
            found = study.user_attrs.get("setup")
            if found is None:
                study.set_user_attr("setup", digest)
        if found not in (None, digest):
            raise ConfigurationError(
                f"the Optuna study {study.study_name!r} in {self.storage} was started for another version of "
                f"{program.name} (its fuzzy functions, data, model or MIPRO settings differ): give MIPRO another "
                "study_name, or leave study_name unset to get one named after the setup"
            )
        return study

    def _full_evaluation(self, study: Any, candidates: _Candidates, score: Scoring, dev: Sequence[Example]) -> None:
        """Score on the whole dev set the not-yet-scored combination with the best mean minibatch score."""
        means: dict[str, list[float]] = defaultdict(list)
        for trial in study.trials:
            if trial.value is not None and trial.user_attrs.get("candidates") == candidates.digest:
                choice: dict[str, list[int]] = {}
                for param, index in trial.params.items():
                    name, _, part = param.rpartition(":")
                    choice.setdefault(name, [0, 0])[0 if part == "instruction" else 1] = int(index)
                means[_key(choice)].append(trial.value)
        full = candidates.full_scores(study)
        pending = [(sum(v) / len(v), k) for k, v in means.items() if k not in full]
        if not pending:
            return
        _, key = max(pending)
        value = score(json.loads(key), dev, candidates, "the best combination so far")
        study.set_user_attr(candidates.full_attr(key), value)
        log.info("full evaluation of the best combination so far: %.1f", value)

    def _params(self, choice: Mapping[str, Sequence[int]], candidates: _Candidates) -> dict[str, Params]:
        return {
            name: Params(candidates.instructions[name][i], candidates.demo_sets[d][name])
            for name, (i, d) in choice.items()
        }

    def _demo_sets(
        self,
        program: Program[..., Any],
        trainset: Sequence[Example],
        metric: Metric,
        budget: Budget,
        rng: random.Random,
    ) -> list[dict[str, tuple[Demo, ...]]]:
        """The demo sets of the candidate ladder (zero-shot has no demos at all, whatever the program holds)."""
        bootstrapper = BootstrapFewShot(max_demos=self.max_demos, max_labeled=self.max_labeled, seed=self.seed)
        no_demos = {name: with_demos(fn, ()) for name, fn in program.functions.items()}
        ladder = candidate_ladder(
            program, trainset, metric, bootstrapper, budget, rng, max(self.demo_sets, 1), zero_shot=no_demos
        )
        return [{name: p.demos for name, p in params.items()} for _, params in ladder]

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
                                program_code=source,
                                data_summary=summary,
                                step=_describe(name, fn),
                                current_instruction=fn.params.instructions,
                                good_examples=examples,
                                tip=tip,
                            )
                    except LMDSLError:
                        continue
                    text = proposal.instruction.strip()
                    if text and text not in candidates[name]:
                        candidates[name].append(text)
        return candidates


@dataclass(frozen=True)
class _Candidates:
    """The instructions and demo sets a study searches over, kept in the study itself.

    Resumed runs and other workers read them back instead of proposing again, so every
    trial's indices mean the same candidates even when the proposer is a hosted model
    that never repeats itself. `encoded` is their JSON; its digest tags trials and scores.
    """

    instructions: Mapping[str, list[str]]
    demo_sets: list[dict[str, tuple[Demo, ...]]]
    encoded: str

    @classmethod
    def of(
        cls,
        program: Program[..., Any],
        instructions: Mapping[str, list[str]],
        demo_sets: list[dict[str, tuple[Demo, ...]]],
    ) -> _Candidates:
        functions = program.functions
        data = {
            "instructions": instructions,
            "demo_sets": [
                {name: dump_demos(functions[name].signature, demos) for name, demos in s.items()} for s in demo_sets
            ],
        }
        return cls(instructions, demo_sets, json.dumps(data, sort_keys=True, ensure_ascii=False))

    @classmethod
    def decode(cls, encoded: str, program: Program[..., Any]) -> _Candidates:
        """Read candidates back, checked against the program: a study is data, never trusted."""
        functions = program.functions
        try:
            data = json.loads(encoded)
            instructions = {name: [str(text) for text in data["instructions"][name]] for name in functions}
            demo_sets = [
                {name: load_demos(functions[name].signature, s[name]) for name in functions} for s in data["demo_sets"]
            ]
            if not demo_sets or any(not texts for texts in instructions.values()):
                raise ValueError("no candidates")
        except (ValueError, TypeError, KeyError, ArtifactError) as error:
            raise ArtifactError(
                f"the Optuna study holds unreadable MIPRO candidates ({error}); delete the study to start afresh"
            ) from None
        return cls(instructions, demo_sets, encoded)

    @classmethod
    def stored(cls, study: Any, program: Program[..., Any]) -> _Candidates | None:
        encoded = study.user_attrs.get("candidates")
        return None if encoded is None else cls.decode(encoded, program)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.encoded.encode()).hexdigest()[:16]

    def share(self, study: Any, program: Program[..., Any]) -> _Candidates:
        """Store these unless another worker got there first; either way, use what the study holds."""
        if study.user_attrs.get("candidates") is None:
            study.set_user_attr("candidates", self.encoded)
        return self.current(study, program)

    def current(self, study: Any, program: Program[..., Any]) -> _Candidates:
        """The study's candidates: these, unless a worker that started at the same moment overwrote them."""
        encoded = study.user_attrs.get("candidates")
        return self if encoded in (None, self.encoded) else self.decode(encoded, program)

    def full_attr(self, key: str) -> str:
        return f"full:{self.digest}:{key}"

    def full_scores(self, study: Any) -> dict[str, float]:
        """Whole-dev-set scores of combinations of these candidates, by any worker."""
        prefix = self.full_attr("")
        return {k.removeprefix(prefix): float(v) for k, v in study.user_attrs.items() if k.startswith(prefix)}


@contextmanager
def _creating(optuna: Any, url: str | None) -> Iterator[Any]:
    """The storage for `url`; an SQLite file is opened under a file lock and waits on a busy database.

    Workers that start together on a new SQLite file would otherwise race to create
    Optuna's tables (an IntegrityError in one of them), and a write that meets another
    worker's lock would fail after SQLite's default 5 s instead of waiting.
    """
    path = url.removeprefix("sqlite:///") if url is not None and url.startswith("sqlite:///") else None
    if path is None or path in ("", ":memory:"):
        yield url
        return
    from filelock import FileLock

    with FileLock(f"{path}.lock", timeout=SQLITE_WAIT_SECONDS):
        yield optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_WAIT_SECONDS}})


def _sampler(optuna: Any, seed: int) -> Any:
    """Multivariate TPE that ignores unfinished trials. Optuna's default "constant liar" counts a RUNNING
    trial as a worst score, and a trial that a killed worker leaves RUNNING stays so for good: TPE all
    but stopped sampling that combination again, however well it had scored."""
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=False)


def _completed(optuna: Any, study: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _model_name(model: ModelSpec) -> str:
    return model if isinstance(model, str) else model.name


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
