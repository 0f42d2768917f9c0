"""Scoring a fuzzy function or a program on labelled examples.

    devset = lmdsl.load_examples("tickets.jsonl")            # Example(message=..., intent=...)
    result = lmdsl.evaluate(route, devset, lambda ex, pred: pred == ex.intent)
    print(result.summary())                                  # score, errors, LM calls, tokens, time

`runner` runs the examples and scores them, `results` holds what came out (and exports
it), `progress` shows how far it got. Examples and the metric contract are `lmdsl.data`.
"""

from __future__ import annotations

from lmdsl.evaluation.results import EvaluationResult, EvaluationRow
from lmdsl.evaluation.runner import evaluate

__all__ = ["EvaluationResult", "EvaluationRow", "evaluate"]
