"""What a metric returns: a bool, a number in [0, 1], or a `Score` (such a number with feedback).

Its own module at the bottom of the house, so that programs (which carry the metric
`@lmdsl.optimize` attached) and everything above them name one type. Examples and the rest
of the metric contract live in `lmdsl.data`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Metric", "Score", "metric_feedback", "metric_score"]


@dataclass(frozen=True, slots=True)
class Score:
    """A metric's value with the reason for it: `Score(0.0, feedback="expected 1042, got 1024")`.

    `value` is a bool or a number in [0, 1], as a plain metric returns; `feedback` is what an
    optimizer that reads it (GEPA) shows the model that rewrites instructions, so say what was
    wrong and what the right answer would have needed. Every optimizer accepts a metric that
    returns one; those that do not read feedback use `value` alone."""

    value: float | bool
    feedback: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.feedback, str):
            raise TypeError(f"Score feedback must be text (str), not {type(self.feedback).__name__}")
        metric_score(self.value)  # a Score holding garbage fails where it is made, not later


Metric = Callable[..., float | bool | Score]
"""`(example, prediction) -> float | bool | Score` or `(example, prediction, trace) -> float | bool | Score`."""


def metric_score(value: object) -> float:
    """A metric's value as a float in [0, 1]: a bool is 1.0 or 0.0, a `Score` its value; anything
    else that is not a real number in [0, 1] (NaN included) is an error."""
    if isinstance(value, Score):
        value = value.value
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, numbers.Real):
        raise TypeError(
            f"returned {value!r} ({type(value).__name__}); a metric returns a bool, a number between 0 and 1, "
            "or lmdsl.Score(value, feedback=...)"
        )
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ValueError(f"returned {number!r}; a metric returns a bool or a number between 0 and 1")
    return number


def metric_feedback(value: object) -> str:
    """The feedback of a metric's value: a `Score`'s text, nothing for a bare bool or number."""
    return value.feedback if isinstance(value, Score) else ""
