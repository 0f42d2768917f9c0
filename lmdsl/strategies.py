"""Strategies: how a fuzzy function turns its inputs into an output, given a way to generate one.

A strategy is a value passed as `strategy=`. `prepare` runs once, when the
decorator runs; `run` runs per call and receives a `Run`, whose `generate` is the
call loop (request, parse, validate, checks, retry with feedback). Strategies
that need a fuzzy function of their own (`react`, `program_of_thought`) live in
their own modules above `fuzzy`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from lmdsl.errors import OutputError, SignatureError
from lmdsl.lm.types import Attempt, Backend, Message

if TYPE_CHECKING:
    from lmdsl.signature import Signature


class Generation(NamedTuple):
    """A validated output and how it was obtained."""

    output: Any
    reasoning: str | None
    attempts: tuple[Attempt, ...]
    details: Mapping[str, Any] = {}


class Run(Protocol):
    """What a strategy can do during one call of a fuzzy function."""

    @property
    def function(self) -> str: ...

    @property
    def inputs(self) -> Mapping[str, Any]: ...

    @property
    def state(self) -> Any:
        """What the strategy's `prepare` returned for this function."""

    @property
    def backend(self) -> Backend:
        """The model this call runs on; fuzzy functions a strategy derives should use it too."""

    def generate(
        self, *, rollout: int = 0, temperature: float | None = None, feedback: tuple[Message, ...] = ()
    ) -> Generation:
        """One validated output; raises `OutputError` (or `AssertionFailed`) when retries run out."""

    def render(self, output: Any) -> str:
        """The output as the model would write it, for feedback turns."""


@dataclass(frozen=True)
class Strategy:
    """The default strategy: one generation of the typed output."""

    reasoning: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def prepare(self, signature: Signature) -> Any:
        """Analyse the function once, at decoration time; the result is `run.state`."""
        return None

    def run(self, run: Run) -> Generation:
        return run.generate()


@dataclass(frozen=True)
class Predict(Strategy):
    """Ask for the typed output directly."""


@dataclass(frozen=True)
class ChainOfThought(Strategy):
    """Ask for step-by-step reasoning first, then the typed output; the reasoning is kept in the record."""

    reasoning: bool = True


predict = Predict()
chain_of_thought = ChainOfThought()

Scorer = Callable[[Any, Mapping[str, Any]], Any]


def _canonical(reply: str) -> str:
    """A reply's JSON with sorted keys: outputs that compare equal get the same text."""
    return json.dumps(json.loads(reply), sort_keys=True, ensure_ascii=False)


def _check_samples(name: str, n: int, temperature: float) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SignatureError(f"{name}: n must be a whole number >= 1, not {n!r}")
    if not 0.0 < temperature <= 2.0:
        raise SignatureError(f"{name}: sampling needs a temperature in (0, 2], not {temperature!r}")


def _score(value: Any) -> tuple[float, str]:
    """A reward's result: a number (or bool), or (number, feedback text)."""
    note = ""
    if isinstance(value, tuple):
        value, note = value
    score = float(value)
    if math.isnan(score):
        raise ValueError("a reward returned NaN")
    return score, str(note or "")


@dataclass(frozen=True)
class _Rewarded(Strategy):
    """A sampling strategy guided by a reward written like an `ensure` check."""

    n: int = 3
    reward: Callable[..., Any] | None = None
    temperature: float = 0.7

    def __post_init__(self) -> None:
        label = "best_of" if isinstance(self, BestOf) else "refine"
        _check_samples(label, self.n, self.temperature)
        if self.reward is None:
            raise SignatureError(f"{label} needs reward=, a function (output, *, <inputs by name>) -> float")

    def prepare(self, signature: Signature) -> Scorer:
        assert self.reward is not None
        return signature.bind_check(self.reward, "reward")


@dataclass(frozen=True)
class BestOf(_Rewarded):
    """Sample `n` outputs (distinct rollouts at `temperature`) and keep the one the reward
    likes best; stop early once a sample reaches `threshold`."""

    threshold: float | None = None

    def run(self, run: Run) -> Generation:
        attempts: list[Attempt] = []
        samples: list[dict[str, Any]] = []
        best: tuple[float, Generation] | None = None
        for rollout in range(self.n):
            try:
                generation = run.generate(rollout=rollout, temperature=self.temperature)
            except OutputError as error:
                attempts.extend(error.attempts)
                continue
            attempts.extend(generation.attempts)
            score, _ = _score(run.state(generation.output, run.inputs))
            samples.append({"output": generation.output, "reward": score})
            if best is None or score > best[0]:
                best = (score, generation)
            if self.threshold is not None and score >= self.threshold:
                break
        if best is None:
            raise OutputError(run.function, attempts)
        return best[1]._replace(attempts=tuple(attempts), details={"samples": samples, "reward": best[0]})


@dataclass(frozen=True)
class Refine(_Rewarded):
    """Generate, score, and while the reward is below `threshold`, show the model its answer,
    the score and the reward's feedback (a reward may return `(score, "advice")`) and try
    again, up to `n` times. The best-scoring answer wins."""

    threshold: float = 1.0

    def run(self, run: Run) -> Generation:
        attempts: list[Attempt] = []
        history: list[dict[str, Any]] = []
        best: tuple[float, Generation] | None = None
        feedback: tuple[Message, ...] = ()
        for rollout in range(self.n):
            try:
                generation = run.generate(
                    rollout=rollout, temperature=0.0 if rollout == 0 else self.temperature, feedback=feedback
                )
            except OutputError as error:
                attempts.extend(error.attempts)
                if best is None:
                    raise OutputError(run.function, attempts) from None
                continue
            attempts.extend(generation.attempts)
            score, note = _score(run.state(generation.output, run.inputs))
            history.append({"output": generation.output, "reward": score, "feedback": note})
            if best is None or score > best[0]:
                best = (score, generation)
            if score >= self.threshold:
                break
            critique = f"That answer scored {score:g}; it needs at least {self.threshold:g}."
            feedback = (
                Message("assistant", run.render(generation.output)),
                Message("user", f"{critique} {note}".strip() + " Give a better answer."),
            )
        assert best is not None
        return best[1]._replace(attempts=tuple(attempts), details={"refinements": history, "reward": best[0]})


@dataclass(frozen=True)
class Majority(Strategy):
    """Sample `n` outputs and return the most common one (outputs that compare equal vote
    together; a tie goes to the earliest)."""

    n: int = 5
    temperature: float = 0.7

    def __post_init__(self) -> None:
        _check_samples("majority", self.n, self.temperature)

    def run(self, run: Run) -> Generation:
        attempts: list[Attempt] = []
        groups: dict[str, list[Generation]] = {}
        for rollout in range(self.n):
            try:
                generation = run.generate(rollout=rollout, temperature=self.temperature)
            except OutputError as error:
                attempts.extend(error.attempts)
                continue
            attempts.extend(generation.attempts)
            groups.setdefault(_canonical(run.render(generation.output)), []).append(generation)
        if not groups:
            raise OutputError(run.function, attempts)
        winner = max(groups.values(), key=len)
        tally = {key: len(group) for key, group in groups.items()}
        return winner[0]._replace(attempts=tuple(attempts), details={"votes": tally})


def best_of(n: int, reward: Callable[..., Any], *, threshold: float | None = None, temperature: float = 0.7) -> BestOf:
    """`n` samples, the best by `reward(output, *, <inputs by name>) -> float`."""
    return BestOf(n=n, reward=reward, threshold=threshold, temperature=temperature)


def refine(n: int, reward: Callable[..., Any], *, threshold: float = 1.0, temperature: float = 0.7) -> Refine:
    """Up to `n` tries, each told why the last one scored below `threshold`."""
    return Refine(n=n, reward=reward, threshold=threshold, temperature=temperature)


def majority(n: int = 5, *, temperature: float = 0.7) -> Majority:
    """The most common of `n` sampled outputs."""
    return Majority(n=n, temperature=temperature)
