"""The strategy protocol, and the two strategies that are one generation: predict, chain of thought.

A strategy is a value passed as `strategy=`. `prepare` runs once, when the
decorator runs; `run` runs per call and receives a `Run`, whose `generate` is the
call loop (request, parse, validate, checks, retry with feedback).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from lmdsl.lm.types import Attempt, Backend, Message

if TYPE_CHECKING:
    from lmdsl.calls.function import FuzzyFunction
    from lmdsl.calls.records import CallRecord
    from lmdsl.signature import Signature


class Generation(NamedTuple):
    """A validated output and how it was obtained."""

    output: Any
    reasoning: str | None
    attempts: tuple[Attempt, ...]
    details: Mapping[str, Any] = {}
    settled: bool = False  # a soft check already failed on this output and let it through: not judged again


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

    def call(
        self, function: FuzzyFunction[..., Any], inputs: Mapping[str, Any], *, feedback: tuple[Message, ...] = ()
    ) -> CallRecord:
        """Call a fuzzy function the strategy derived (`prepare`) on this call's model, passed in:
        code the sub-call runs (a tool) keeps its own models."""


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
