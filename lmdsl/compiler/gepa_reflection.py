"""GEPA's reflection: the typed fuzzy function that proposes an instruction, and the records of
a minibatch run it is shown, cut to fit the cap on the reflection prompt."""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import BaseModel, Field

from lmdsl.calls.function import FuzzyFunction, fuzzy
from lmdsl.evaluation.results import EvaluationRow
from lmdsl.prompt import Prompt

REFLECTION_MAX_TOKENS = 512  # room for a long instruction: a reply cut short is a lost proposal


class NewInstruction(BaseModel):
    instruction: str = Field(min_length=1, description="the complete new instruction for the assistant")


@functools.cache
def reflector() -> FuzzyFunction[..., NewInstruction]:
    """The fuzzy function that proposes instructions, built on first use (not at import). No
    retries: a retry would resend a longer prompt than the cap allows."""

    def propose_instruction(
        current_instruction: str, task_step: str, examples_with_feedback: list[str]
    ) -> NewInstruction:
        """I gave an assistant the current instruction for one step of a task. The examples show
        what the step was given, what the assistant answered, and feedback on how the answer
        could be better. Write a new instruction for the assistant. Infer the task and the input
        format from the inputs. Put every niche or domain-specific fact the feedback reveals into
        the instruction, since the assistant will not see these examples, and keep any
        generalizable strategy that worked."""
        raise NotImplementedError

    return fuzzy(retries=0, max_tokens=REFLECTION_MAX_TOKENS)(propose_instruction)


def records(fn: FuzzyFunction[..., Any], row: EvaluationRow) -> list[str]:
    """One text per call of `fn` in the run: its inputs, its output, the score, the labels and the feedback."""
    labels = json.dumps(dict(row.labels), ensure_ascii=False, default=str)
    feedback = row.feedback or "(no feedback)"
    found = []
    for record in row.calls:
        if record.function != fn.signature.qualname:
            continue
        if record.error is None:
            output = fn.output_format.render(record.output)
        else:
            output = f"(no valid output) {record.attempts[-1].text if record.attempts else ''}"
        found.append(
            f"Inputs: {json.dumps(dict(record.inputs), ensure_ascii=False, default=str)}\n"
            f"Output: {output}\nScore: {row.score:g} of 1\nExpected: {labels}\nFeedback: {feedback}"
        )
    return found


def fit(instruction: str, step: str, found: list[str], cap: int) -> dict[str, Any] | None:
    """The reflection's inputs, the records cut (then dropped, last first) until the request is at
    most `cap` characters; None when not even one fits."""
    fn = reflector()
    prompt = Prompt(fn.signature, fn.output_format, fn.params)

    def size(kept: list[str]) -> int:
        values = fn.signature.validate_inputs(
            {"current_instruction": instruction, "task_step": step, "examples_with_feedback": kept}
        )
        return sum(len(m.content) for m in prompt.request(values, temperature=0.0, max_tokens=None).messages)

    room = cap - size([])
    if room <= 0:
        return None
    kept = list(found)
    while kept:
        share = max(200, room // len(kept) - 16)
        cut = [text if len(text) <= share else text[: share - 10] + " [...cut]" for text in kept]
        if size(cut) <= cap:
            return {"current_instruction": instruction, "task_step": step, "examples_with_feedback": cut}
        kept.pop()
    return None


def describe_step(name: str, fn: FuzzyFunction[..., Any]) -> str:
    return f"{name}({', '.join(fn.signature.input_names)}) -> {fn.output_format.shape}"


def short(text: str, limit: int = 120) -> str:
    """An instruction as a log shows it: quoted, on one line, cut at `limit` characters."""
    line = " ".join(text.split())
    return repr(line if len(line) <= limit else line[: limit - 3] + "...")
