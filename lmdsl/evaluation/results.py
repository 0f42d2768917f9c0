"""What an evaluation produced: one row per example, and the totals."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdsl.calls.records import CallRecord
from lmdsl.unicode import printable


@dataclass(frozen=True, slots=True)
class EvaluationRow:
    """One example's evaluation. `prediction` is the typed output (None if the run failed);
    `error_type` and `error` say what failed (the run, or the metric: "metric: ..."), and
    `error_at` where (`file:line`: the deepest line of the user's code in its traceback, when
    it has one). `lm_calls` and the tokens are what reached a model; `cached_calls` the LM
    calls the cache answered instead. `feedback` says why the example scored as it did: the
    metric's `Score` feedback, replies that failed to parse or were rejected by an `ensure`
    check (even when a retry then passed), and the error of a run that failed; None when there
    is nothing to say. `calls` are the run's fuzzy calls, for an optimizer that reflects on them."""

    index: int
    inputs: Mapping[str, Any]
    labels: Mapping[str, Any]
    prediction: Any
    score: float
    error: str | None
    error_type: str | None
    seconds: float
    lm_calls: int
    input_tokens: int
    output_tokens: int
    error_at: str | None = None
    cached_calls: int = 0
    feedback: str | None = None
    calls: tuple[CallRecord, ...] = field(default=(), repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe_error(self, limit: int = 200) -> str:
        """`example N: Type: message (at file:line)`, the message cut at `limit` characters."""
        message = " ".join(printable(self.error or "").split())  # one line
        if len(message) > limit:
            message = message[: limit - 3] + "..."
        at = f" (at {self.error_at})" if self.error_at else ""
        return f"example {self.index}: {self.error_type}: {message}{at}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: values that are models, enums, tuples... converted by pydantic,
        anything else it cannot convert written as its repr."""
        return {
            "index": self.index,
            "inputs": _jsonable(dict(self.inputs)),
            "labels": _jsonable(dict(self.labels)),
            "prediction": _jsonable(self.prediction),
            "score": self.score,
            "feedback": self.feedback,
            "error_type": self.error_type,
            "error": self.error,
            "error_at": self.error_at,
            "seconds": self.seconds,
            "lm_calls": self.lm_calls,
            "cached_calls": self.cached_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate` measured: the mean metric value as a percentage (0-100), each
    example's row in devset order, and the LM calls, tokens and wall-clock time spent.
    Cached replies count as no LM call and no tokens; `cached_calls` counts them."""

    score: float
    rows: tuple[EvaluationRow, ...] = field(repr=False)
    lm_calls: int
    input_tokens: int
    output_tokens: int
    seconds: float
    errors: int
    target: str = ""
    cached_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def summary(self) -> str:
        """A few lines for a terminal: the score, the cost, and the first distinct errors."""
        name = f" {self.target}" if self.target else ""
        cached = f" (and {self.cached_calls} from the cache)" if self.cached_calls else ""
        lines = [
            f"evaluate{name}: score {self.score:.1f} on {len(self.rows)} example(s), {self.errors} error(s); "
            f"{self.lm_calls} LM call(s){cached}, {self.input_tokens} input + {self.output_tokens} output tokens, "
            f"{self.seconds:.1f} s"
        ]
        seen: set[str] = set()
        for row in self.rows:
            if row.error is not None and row.error not in seen and len(seen) < 3:
                seen.add(row.error)
                lines.append(f"  {row.describe_error()}")
        return "\n".join(lines)

    @property
    def first_error(self) -> EvaluationRow | None:
        """The row of the first example that failed, if one did."""
        return next((row for row in self.rows if row.error is not None), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "score": self.score,
            "examples": len(self.rows),
            "errors": self.errors,
            "lm_calls": self.lm_calls,
            "cached_calls": self.cached_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "seconds": self.seconds,
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the totals and every row as one JSON object (`rows`: one entry per example)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write one row per example: `index`, `inputs.<name>`..., `labels.<name>`...,
        `prediction`, `score`, `feedback`, `error_type`, `error`, `error_at`, `seconds`, `lm_calls`, `cached_calls`,
        tokens.
        Strings are written as they are, None as an empty cell, anything else as JSON text."""
        input_names: dict[str, None] = {}
        label_names: dict[str, None] = {}
        for row in self.rows:
            input_names.update(dict.fromkeys(row.inputs))
            label_names.update(dict.fromkeys(row.labels))
        fixed = [
            "prediction",
            "score",
            "feedback",
            "error_type",
            "error",
            "error_at",
            "seconds",
            "lm_calls",
            "cached_calls",
            "input_tokens",
            "output_tokens",
        ]
        header = ["index", *(f"inputs.{n}" for n in input_names), *(f"labels.{n}" for n in label_names), *fixed]
        with Path(path).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in self.rows:
                data = row.to_dict()
                cells: list[Any] = [row.index]
                cells += [data["inputs"].get(n) for n in input_names]
                cells += [data["labels"].get(n) for n in label_names]
                cells += [data[name] for name in fixed]
                writer.writerow([_cell(value) for value in cells])


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    try:
        return to_jsonable_python(value, fallback=repr)
    except Exception:
        return repr(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def totals(name: str, rows: list[EvaluationRow], seconds: float) -> EvaluationResult:
    return EvaluationResult(
        score=100.0 * sum(row.score for row in rows) / len(rows) if rows else 0.0,
        rows=tuple(rows),
        lm_calls=sum(row.lm_calls for row in rows),
        input_tokens=sum(row.input_tokens for row in rows),
        output_tokens=sum(row.output_tokens for row in rows),
        seconds=seconds,
        errors=sum(row.error is not None for row in rows),
        target=name,
        cached_calls=sum(row.cached_calls for row in rows),
    )
