"""Strategies: how a fuzzy function turns its inputs into an output, given a way to generate one.

A strategy is a value passed as `strategy=`. It says whether the model writes a
reasoning field before the typed output, and how many generations it asks for and
which one it keeps. The call loop (request, parse, validate, retry with feedback)
is the `Generate` function a strategy receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from lmdsl.errors import Attempt


class Generation(NamedTuple):
    """A validated output and how it was obtained."""

    output: Any
    reasoning: str | None
    attempts: tuple[Attempt, ...]


class Generate(Protocol):
    """Produce one validated output, retrying with feedback; raises `OutputError` when retries run out."""

    def __call__(self, *, rollout: int = 0, temperature: float | None = None) -> Generation: ...


@dataclass(frozen=True)
class Strategy:
    """The default strategy: one generation of the typed output."""

    reasoning: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def run(self, generate: Generate) -> Generation:
        return generate()


@dataclass(frozen=True)
class Predict(Strategy):
    """Ask for the typed output directly."""


@dataclass(frozen=True)
class ChainOfThought(Strategy):
    """Ask for step-by-step reasoning first, then the typed output; the reasoning is kept in the record."""

    reasoning: bool = True


predict = Predict()
chain_of_thought = ChainOfThought()
