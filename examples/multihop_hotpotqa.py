"""Multi-hop question answering on HotPotQA: search, read, search again, answer; compiled end to end.

Run it with `.venv/bin/python examples/multihop_hotpotqa.py` (after `./dev setup`): it evaluates
the program zero-shot on held-out questions; `--compile random` (or `bootstrap`, `mipro`) first
compiles it on training questions and reports before and after. It reads the questions and the
pooled paragraph corpus from `../shared/data/hotpotqa/` beside the project (or `--data DIR`),
builds its own BM25 index over the corpus in memory, and exits with a message when the data is absent.

The program, Baleen-style:
    first_query(question) -> search -> followup_query(question, notes) -> search -> answer(question, notes)

Only the final answer and the titles of the two gold paragraphs are labelled. Compiling gives
every step demonstrations from runs that passed (the answer right, or both gold paragraphs
found), so the query-writing steps learn without labels of their own. Metrics: answer exact
match and token F1 (SQuAD's normalisation), and gold-paragraph recall of what was retrieved.
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

import lmdsl
from lmdsl.compiler.base import Optimizer

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hotpotqa"
NOTE_WORDS = 30  # each retrieved paragraph is cut to its first words: the model's context is small


class SearchQuery(BaseModel):
    query: str = Field(description="a short search query: the names and key words to look up", max_length=80)


class Answer(BaseModel):
    answer: str = Field(description="a short answer, 1 to 5 words, or yes or no", max_length=60)


@lmdsl.fuzzy(retries=1)
def first_query(question: str) -> SearchQuery:
    """Write a search query that finds a paragraph about the first thing the question needs."""


@lmdsl.fuzzy(retries=1)
def followup_query(question: str, notes: list[str]) -> SearchQuery:
    """Write a search query for what the notes do not tell yet and the question needs."""


@lmdsl.fuzzy
def answer(question: str, notes: list[str]) -> Answer:
    """Answer the question from the notes, in a few words."""


@first_query.ensure(soft=True)  # soft: after its retry a long query is kept (with a warning), not an error
@followup_query.ensure(soft=True)
def a_search_query(out: SearchQuery, *, question: str) -> None:
    words = out.query.split()
    if not 1 <= len(words) <= 16:
        raise lmdsl.Retry("Write a search query of 1 to 16 words: the names and key words to look up.")


@dataclass(frozen=True)
class Hops:
    """What the program found: its answer, its two queries, and the titles of the paragraphs it read."""

    answer: str
    queries: tuple[str, ...]
    titles: tuple[str, ...]


def note(passage: lmdsl.Passage) -> str:
    words = passage.text.split()
    text = " ".join(words[:NOTE_WORDS]) + (" ..." if len(words) > NOTE_WORDS else "")
    return f"{passage.title}: {text}" if passage.title else text


def multihop(search: lmdsl.Retriever, *, k: int = 2) -> lmdsl.Program[[str], Hops]:
    """The two-hop program over `search` (any retriever), reading `k` paragraphs per hop."""

    @lmdsl.program
    def hotpot(question: str) -> Hops:
        first = first_query(question=question).query
        found = search(first, k)
        second = followup_query(question=question, notes=[note(p) for p in found]).query
        seen = {p.text for p in found}
        found += [p for p in search(second, k) if p.text not in seen]
        reply = answer(question=question, notes=[note(p) for p in found])
        return Hops(reply.answer, (first, second), tuple(p.title or "" for p in found))

    return hotpot


# -- metrics ------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(example: lmdsl.Example, prediction: Hops) -> bool:
    return normalize(prediction.answer) == normalize(example.answer)


def f1(example: lmdsl.Example, prediction: Hops) -> float:
    predicted, gold = normalize(prediction.answer).split(), normalize(example.answer).split()
    common = sum((Counter(predicted) & Counter(gold)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def gold_recall(example: lmdsl.Example, prediction: Hops) -> float:
    """The share of the gold paragraphs among those the program retrieved."""
    gold = set(example.gold_titles)
    return len(gold & set(prediction.titles)) / len(gold)


def answer_or_recall(example: lmdsl.Example, prediction: Hops) -> float:
    """What compiling maximises: 1 when the answer is exact or both gold paragraphs were found,
    else the share found. A run scoring 1 gives every step its demonstrations."""
    return max(float(exact_match(example, prediction)), gold_recall(example, prediction))


# -- data ---------------------------------------------------------------------------------
def load_questions(folder: Path, seed: int = 0) -> list[lmdsl.Example]:
    rows = [json.loads(line) for line in (folder / "questions.jsonl").read_text("utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    return [
        lmdsl.Example(question=r["question"], answer=r["answer"], gold_titles=tuple(r["gold_titles"])) for r in rows
    ]


@dataclass(frozen=True)
class Scores:
    label: str
    exact_match: float
    f1: float
    recall: float
    lm_calls: int
    seconds: float


def score(label: str, program: lmdsl.Program[..., Hops], examples: Sequence[lmdsl.Example]) -> Scores:
    """Run once per example (the metrics read the same runs) and average each metric."""
    started = time.perf_counter()
    result = lmdsl.evaluate(program, examples, lambda e, p: 1.0, threads=1, progress=False)
    rows = [(e, row.prediction) for e, row in zip(examples, result.rows)]
    done = [(e, p) for e, p in rows if isinstance(p, Hops)]

    def mean(metric: Any) -> float:
        return sum(float(metric(e, p)) for e, p in done) / len(examples)

    return Scores(label, mean(exact_match), mean(f1), mean(gold_recall), result.lm_calls, time.perf_counter() - started)


def optimizer(name: str, budget: int, seed: int) -> Optimizer:
    if name == "bootstrap":
        return lmdsl.BootstrapFewShot(max_demos=2, max_labeled=0, max_lm_calls=budget, seed=seed)
    if name == "random":
        return lmdsl.RandomSearch(candidates=5, max_demos=2, max_labeled=0, max_lm_calls=budget, threads=1, seed=seed)
    return lmdsl.MIPRO(
        trials=6, instructions=2, demo_sets=4, max_demos=2, max_labeled=0, max_lm_calls=budget, threads=1, seed=seed
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="local", help="a model string (default: the embedded model)")
    parser.add_argument("--data", type=Path, default=DATA, help="the folder of questions.jsonl and corpus.jsonl")
    parser.add_argument("--compile", choices=["bootstrap", "random", "mipro"], help="compile before evaluating")
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--dev", type=int, default=16)
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--k", type=int, default=2, help="paragraphs retrieved per hop")
    parser.add_argument("--budget", type=int, default=400, help="the compile's LM-call budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="ask the model every time (measure real calls)")
    args = parser.parse_args(argv)
    if not (args.data / "questions.jsonl").is_file() or not (args.data / "corpus.jsonl").is_file():
        print(f"skipped: no HotPotQA data at {args.data} (questions.jsonl and corpus.jsonl); pass --data DIR")
        return 0
    lmdsl.configure(model=args.model, cache=not args.no_cache)

    started = time.perf_counter()
    search = lmdsl.BM25(args.data / "corpus.jsonl")
    print(f"BM25 over {len(search)} paragraphs built in {time.perf_counter() - started:.1f} s")
    questions = load_questions(args.data, args.seed)
    train = questions[: args.train]
    dev = questions[args.train : args.train + args.dev]
    test = questions[args.train + args.dev : args.train + args.dev + args.test]
    program = multihop(search, k=args.k)

    rows = [score("zero-shot", program, test)]
    if args.compile:
        started = time.perf_counter()
        compiled = optimizer(args.compile, args.budget, args.seed).compile(program, train, answer_or_recall, devset=dev)
        program.params = compiled.params
        print(
            f"compiled with {args.compile}: dev {compiled.baseline} -> {compiled.score}, {compiled.lm_calls} LM calls "
            f"({compiled.cached_calls} cached), {time.perf_counter() - started:.0f} s; "
            f"demos per step: { {name: len(p.demos) for name, p in compiled.params.items()} }"
        )
        rows.append(score(f"compiled ({args.compile})", program, test))
    print(f"\n{len(test)} held-out questions, {args.k} paragraphs per hop, model {args.model!r}")
    print(f"{'program':<22} {'EM':>6} {'F1':>6} {'recall':>7} {'LM calls':>9} {'seconds':>8}")
    for row in rows:
        print(
            f"{row.label:<22} {row.exact_match:>6.1%} {row.f1:>6.1%} {row.recall:>7.1%} {row.lm_calls:>9} {row.seconds:>8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
