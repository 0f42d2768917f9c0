#!/usr/bin/env python
"""Prompts only against prompts + weights, on the demo's train/dev split (examples/order_numbers.py).

    ./dev bench finetune prompts     # RandomSearch, as the demo compiles (demonstrations only)
    ./dev bench finetune weights     # BootstrapFinetune: LoRA on the program's successful runs, zero-shot prompt
    ./dev bench finetune together    # BetterTogether: demos, then weights, then demos again

Each run starts from an empty cache and prints one JSON line: the dev score before and after,
LM calls and tokens, compile seconds, training seconds and steps, the adapter's size, the dev
score of the program loaded back from the artifact it wrote, and the peak memory of the process.
Needs the `finetune` extra for `weights` and `together` (./dev setup installs it).
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import lmdsl
from lmdsl.compiler import write_artifact
from lmdsl.compiler.base import Optimizer
from lmdsl.training.lora import LoraSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import order_numbers as demo  # noqa: E402  (the example's data, function and metric)


@lmdsl.program
def find_order(message: str) -> str:
    return demo.order_number(message).strip()


def optimizer(kind: str, train_seconds: float, epochs: int) -> Optimizer:
    demos = lmdsl.RandomSearch(candidates=6, max_demos=4, max_labeled=4, max_lm_calls=1500, seed=0)
    finetune = lmdsl.BootstrapFinetune(training=LoraSettings(epochs=epochs, max_seconds=train_seconds, threads=2))
    if kind == "prompts":
        return demos
    if kind == "weights":
        return finetune
    return lmdsl.BetterTogether(steps=("demos", "weights", "demos"), demos=demos, finetune=finetune)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["prompts", "weights", "together"])
    parser.add_argument("--train-seconds", type=float, default=900.0, help="the training time budget per weights step")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as scratch:
        lmdsl.configure(cache_dir=Path(scratch) / "cache")
        started = time.perf_counter()
        compiled = optimizer(args.kind, args.train_seconds, args.epochs).compile(
            find_order, demo.TRAIN, demo.exact, devset=demo.DEV
        )
        seconds = time.perf_counter() - started
        artifact = Path(scratch) / "build" / "find_order.lmdsl.json"
        write_artifact(artifact, find_order, compiled, model="local")
        find_order.use_artifact(artifact, on_stale="raise")
        loaded = lmdsl.evaluate(find_order, demo.DEV, demo.exact, threads=1, progress=False)
        weights = compiled.weights
        training = weights.entry.training if weights is not None else {}
        row = {
            "kind": args.kind,
            "dev_before": compiled.baseline,
            "dev_after": compiled.score,
            "dev_loaded_from_artifact": loaded.score,
            "lm_calls": compiled.lm_calls,
            "tokens": compiled.tokens,
            "compile_seconds": round(seconds, 1),
            "train_seconds": training.get("seconds"),
            "train_steps": training.get("steps"),
            "train_examples": weights.entry.data.examples if weights is not None else None,
            "loss": [training.get("first_loss"), training.get("last_loss")],
            "adapter_bytes": weights.entry.bytes if weights is not None else None,
            "candidates": [(c.label, c.score) for c in compiled.candidates],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
