#!/usr/bin/env python
"""Demos chosen per call (`KNNFewShot`) against the fixed demo sets `RandomSearch` and `MIPRO`
choose, on TREC question types (six labels) and the embedded model.

The same seeded subsets for every optimizer (`../shared/data/trec/train.jsonl` beside the
project: `--train` training and `--dev` dev examples; `--test` held-out ones from
`test.jsonl`), the same LM-call budget for each compile (`--budget`), caching off for the
held-out scores (every test example costs one real call), each compile in a fresh cache.
Exits with a message when the data is absent.

    .venv/bin/python benchmarks/knn_demos.py --train 60 --dev 16 --test 40 --budget 60
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import lmdsl
from lmdsl.compiler.base import Optimizer

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "trec"
Kind = Literal["abbreviation", "description", "entity", "human", "location", "number"]


@lmdsl.fuzzy
def question_type(question: str) -> Kind:
    """Say what kind of answer the question asks for."""


@lmdsl.program
def classify(question: str) -> str:
    return question_type(question=question)


def right(example: lmdsl.Example, prediction: str) -> bool:
    return bool(prediction == example.label)


def load(path: Path, count: int, seed: int) -> list[lmdsl.Example]:
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    return [lmdsl.Example(question=r["question"], label=r["label"]) for r in rows[:count]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--dev", type=int, default=16)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--budget", type=int, default=60, help="LM calls each compile may spend")
    parser.add_argument("--k", type=int, default=4, help="demos per call (and the fixed sets' max_demos)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run only these rows (zero-shot, random, mipro, knn)")
    args = parser.parse_args(argv)
    if not (DATA / "train.jsonl").is_file():
        print(f"skipped: no TREC data at {DATA}")
        return 0
    examples = load(DATA / "train.jsonl", args.train + args.dev, args.seed)
    train, dev = examples[: args.train], examples[args.train :]
    test = load(DATA / "test.jsonl", args.test, args.seed)
    k, budget = args.k, args.budget
    optimizers: dict[str, Optimizer | None] = {
        "zero-shot": None,
        "knn": lmdsl.KNNFewShot(k=k, max_lm_calls=budget, threads=1),
        "random": lmdsl.RandomSearch(candidates=4, max_demos=k, max_labeled=k, max_lm_calls=budget, threads=1),
        "mipro": lmdsl.MIPRO(
            trials=4,
            instructions=2,
            demo_sets=4,
            minibatch_size=8,
            max_demos=k,
            max_labeled=k,
            max_lm_calls=budget,
            threads=1,
        ),
    }
    print(f"TREC: {len(train)} train, {len(dev)} dev, {len(test)} held-out; budget {budget} LM calls per compile")
    print(f"{'optimizer':<11} {'held-out':>9} {'compile calls':>14} {'compile s':>10} {'chosen':>s}")
    for name, optimizer in optimizers.items():
        if args.only and name not in args.only:
            continue
        classify.reset_params()
        calls, seconds, chosen = 0, 0.0, "the docstring"
        if optimizer is not None:
            with tempfile.TemporaryDirectory() as cache, lmdsl.using(cache_dir=cache):
                started = time.perf_counter()
                compiled = optimizer.compile(classify, train, right, devset=dev)
                seconds = time.perf_counter() - started
            calls = compiled.lm_calls
            classify.params = compiled.params
            params = compiled.params["question_type"]
            chosen = f"{len(params.demos)} fixed demos" + (
                f", {params.nearest.k} of {len(params.nearest.pool)} per call" if params.nearest else ""
            )
        with lmdsl.using(cache=False):
            result = lmdsl.evaluate(classify, test, right, threads=1, progress=False)
        print(f"{name:<11} {result.score:>8.1f}% {calls:>14} {seconds:>10.0f} {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
