"""Answer customer questions from a small FAQ: a retriever, two fuzzy functions, an `ensure`
and a `require`, composed as an lmdsl program.

    .venv/bin/python examples/faq_assistant.py
    .venv/bin/python examples/faq_assistant.py "How long does express shipping take?"

The retriever is plain Python (word overlap over `data/faq.jsonl`, written for this
project). `answer.ensure` rejects a source number that points at no passage (the model
is told and tries again); `lmdsl.require` in the program rejects an answer that shares
no words with the passage it cites, which backtracks to the `answer` call with that
feedback.
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path

from pydantic import BaseModel, Field

import lmdsl

FAQ = Path(__file__).parent / "data" / "faq.jsonl"
STOPWORDS = frozenset(
    "a an and are can do does for how i in is it my of on or the to what when where which with you your".split()
)


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}


@cache
def passages() -> tuple[str, ...]:
    return tuple(json.loads(line)["text"] for line in FAQ.read_text().splitlines() if line.strip())


def retrieve(query: str, k: int = 2) -> list[str]:
    """The k FAQ passages sharing the most words with the query."""
    wanted = words(query)
    ranked = sorted(passages(), key=lambda text: len(wanted & words(text)), reverse=True)
    return ranked[:k]


@lmdsl.fuzzy
def search_query(question: str) -> str:
    """Rewrite the customer's question as a short search query of key words."""
    ...


class Answer(BaseModel):
    answer: str = Field(description="the answer, in one sentence taken from the passages")
    source: int = Field(description="the number of the passage the answer comes from, starting at 1")


@lmdsl.fuzzy(retries=2)
def answer(question: str, passages: list[str]) -> Answer:
    """Answer the customer's question using only the numbered passages."""
    ...


@answer.ensure
def cites_a_passage(out: Answer, *, passages: list[str]) -> None:
    if not 1 <= out.source <= len(passages):
        raise lmdsl.Retry(f"source must be a passage number between 1 and {len(passages)}")


@lmdsl.program(max_backtracks=2)
def faq_assistant(question: str) -> Answer:
    found = retrieve(search_query(question) + " " + question)
    numbered = [f"{i}. {text}" for i, text in enumerate(found, 1)]
    reply = answer(question=question, passages=numbered)
    cited = found[reply.source - 1]
    lmdsl.require(words(reply.answer) & words(cited), "The answer must use words from the passage it cites.")
    return reply


QUESTIONS = (
    "How long does express shipping take?",
    "How do I reset my password?",
    "Can I cancel my order after it ships?",
)


def main(argv: list[str]) -> None:
    for question in argv or QUESTIONS:
        print(f"Q: {question}")
        try:
            result = faq_assistant.run(question)
        except lmdsl.AssertionFailed as failure:
            print(f"   no grounded answer: {failure}\n")
            continue
        print(f"A: {result.output.answer}  [passage {result.output.source}]")
        steps = ", ".join(step.function.__name__ for step in result.trace)
        print(f"   {len(result.trace)} fuzzy calls ({steps}), {result.backtracks} backtrack(s)\n")


if __name__ == "__main__":
    main(sys.argv[1:])
