"""Sampling strategies: `best_of`, `refine` and `majority`, drawing their samples through one sampler.

Each sample is a distinct rollout of the call loop (so a cached sample is not simply
repeated); a sample that fails to validate costs its attempts and is skipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from lmdsl.errors import OutputError, SignatureError
from lmdsl.lm.types import Attempt, Message
from lmdsl.strategies.base import Generation, Run, Strategy

if TYPE_CHECKING:
    from lmdsl.signature import Signature

Scorer = Callable[[Any, Mapping[str, Any]], Any]


class _Sampler:
    """The samples of one call: every attempt kept, failed samples skipped."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.attempts: list[Attempt] = []

    def draw(self, rollout: int, temperature: float, feedback: tuple[Message, ...] = ()) -> Generation | None:
        """One validated sample, or None when this rollout failed (its attempts are kept)."""
        try:
            generation = self.run.generate(rollout=rollout, temperature=temperature, feedback=feedback)
        except OutputError as error:
            self.attempts.extend(error.attempts)
            return None
        self.attempts.extend(generation.attempts)
        return generation

    def give_up(self) -> NoReturn:
        raise OutputError(self.run.function, self.attempts) from None

    def chosen(self, generation: Generation, details: dict[str, Any]) -> Generation:
        return generation._replace(attempts=tuple(self.attempts), details=details)


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
        sampler = _Sampler(run)
        samples: list[dict[str, Any]] = []
        best: tuple[float, Generation] | None = None
        for rollout in range(self.n):
            generation = sampler.draw(rollout, self.temperature)
            if generation is None:
                continue
            score, _ = _score(run.state(generation.output, run.inputs))
            samples.append({"output": generation.output, "reward": score})
            if best is None or score > best[0]:
                best = (score, generation)
            if self.threshold is not None and score >= self.threshold:
                break
        if best is None:
            sampler.give_up()
        return sampler.chosen(best[1], {"samples": samples, "reward": best[0]})


@dataclass(frozen=True)
class Refine(_Rewarded):
    """Generate, score, and while the reward is below `threshold`, show the model its answer,
    the score and the reward's feedback (a reward may return `(score, "advice")`) and try
    again, up to `n` times. The best-scoring answer wins."""

    threshold: float = 1.0

    def run(self, run: Run) -> Generation:
        sampler = _Sampler(run)
        history: list[dict[str, Any]] = []
        best: tuple[float, Generation] | None = None
        feedback: tuple[Message, ...] = ()
        for rollout in range(self.n):
            generation = sampler.draw(rollout, 0.0 if rollout == 0 else self.temperature, feedback)
            if generation is None:
                if best is None:
                    sampler.give_up()
                continue
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
        return sampler.chosen(best[1], {"refinements": history, "reward": best[0]})


@dataclass(frozen=True)
class Majority(Strategy):
    """Sample `n` outputs and return the most common one (outputs that compare equal vote
    together; a tie goes to the earliest)."""

    n: int = 5
    temperature: float = 0.7

    def __post_init__(self) -> None:
        _check_samples("majority", self.n, self.temperature)

    def run(self, run: Run) -> Generation:
        sampler = _Sampler(run)
        groups: dict[str, list[Generation]] = {}
        for rollout in range(self.n):
            generation = sampler.draw(rollout, self.temperature)
            if generation is None:
                continue
            groups.setdefault(_canonical(run.render(generation.output)), []).append(generation)
        if not groups:
            sampler.give_up()
        winner = max(groups.values(), key=len)
        return sampler.chosen(winner[0], {"votes": {key: len(group) for key, group in groups.items()}})


def best_of(n: int, reward: Callable[..., Any], *, threshold: float | None = None, temperature: float = 0.7) -> BestOf:
    """`n` samples, the best by `reward(output, *, <inputs by name>) -> float`."""
    return BestOf(n=n, reward=reward, threshold=threshold, temperature=temperature)


def refine(n: int, reward: Callable[..., Any], *, threshold: float = 1.0, temperature: float = 0.7) -> Refine:
    """Up to `n` tries, each told why the last one scored below `threshold`."""
    return Refine(n=n, reward=reward, threshold=threshold, temperature=temperature)


def majority(n: int = 5, *, temperature: float = 0.7) -> Majority:
    """The most common of `n` sampled outputs."""
    return Majority(n=n, temperature=temperature)
