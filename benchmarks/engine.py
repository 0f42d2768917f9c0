#!/usr/bin/env python
"""The embedded model's engines side by side: lmdsl's per-call time against the model's own limit.

    ./dev bench engine              # every installed engine (xllamacpp; llama-cpp-python if installed)
    ./dev bench engine --calls 20   # fewer dev messages

For each engine: the demo's fuzzy function (`examples/order_numbers.py`, `order_number`) on the
first N dev messages, zero-shot and with 4 demonstrations from the training set, each call
through lmdsl (cache off): milliseconds per call (median and spread), generated tokens per
second, and the score. Then the model's limit on the same machine: the time a call of the same
shape needs at the throughput llama.cpp reaches on this machine (prompt tokens read and tokens
generated per second, from a plain completion with no grammar and no lmdsl), so the row shows
how much the engine, the grammar and lmdsl add.
"""

# A fuzzy function's body is its docstring; mypy calls that an empty body.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lmdsl
from lmdsl.lm.local import ENGINES, LocalModel, installed_engines

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

demo: Any = importlib.import_module("order_numbers")  # the examples folder is not a package


def measure(engine: str, calls: int) -> list[str]:
    model = LocalModel(engine=engine)
    fn = demo.order_number
    demos = tuple(lmdsl.Demo({"message": e.message}, e.label) for e in demo.TRAIN[:4])
    rows = []
    with lmdsl.using(model=model, cache=False):
        fn("warm-up: order 1234")  # the load and the first grammar are not a call's cost
        for label, params in (("zero-shot", lmdsl.Params(fn.signature.instructions)), ("4 demos", None)):
            chosen = params or lmdsl.Params(fn.signature.instructions, demos)
            times: list[float] = []
            generated = 0
            right = 0
            with demo.find_order.with_params({"order_number": chosen}):
                for example in demo.DEV[:calls]:
                    started = time.perf_counter()
                    record = fn.invoke({"message": example.message})
                    times.append(time.perf_counter() - started)
                    generated += record.usage.output_tokens
                    right += str(record.output).strip() == example.label
            ms = sorted(t * 1000 for t in times)
            rows.append(
                f"  {engine:17} {label:10} {statistics.median(ms):7.0f} ms/call [{ms[0]:.0f}-{ms[-1]:.0f}]"
                f"  {generated / sum(times):6.0f} generated tokens/s  score {100 * right / len(times):5.1f}"
                f"  ({len(times)} calls, {generated / len(times):.1f} tokens generated per call)"
            )
    return rows


def limit(calls: int) -> list[str]:
    """llama.cpp's own throughput here, with no grammar and no lmdsl: prompt tokens read and
    tokens generated per second, each measured on its own."""
    from lmdsl.lm.local import _load, embedded_model_path

    server: Any = getattr(_load(embedded_model_path(), 4096, "xllamacpp"), "_server")
    read: list[float] = []
    wrote: list[float] = []
    for example in demo.DEV[:calls]:
        prompt = f"Message: {example.message}\nThe order number is"
        reading = server.handle_completions({"prompt": prompt * 4, "max_tokens": 1, "cache_prompt": False})
        read.append(reading["timings"]["prompt_per_second"])
        writing = server.handle_completions({"prompt": prompt, "max_tokens": 48, "temperature": 0, "ignore_eos": True})
        wrote.append(writing["timings"]["predicted_per_second"])
    prompt_rate, generation_rate = statistics.median(read), statistics.median(wrote)
    # a zero-shot call of the demo: about 30 new prompt tokens (the prefix is cached) and 14 generated
    per_call = 1000 * (30 / prompt_rate + 14 / generation_rate)
    return [
        f"  the model's limit: {prompt_rate:.0f} prompt tokens/s read, {generation_rate:.0f} tokens/s generated"
        f" (medians of {len(read)}): {per_call:.0f} ms for a zero-shot call (30 new prompt tokens, 14 generated)"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40, help="dev messages per row (at most 40)")
    parser.add_argument("--engine", choices=ENGINES, help="measure this engine only, in this process")
    parser.add_argument("--limit", action="store_true", help="measure the model's limit only, in this process")
    args = parser.parse_args()
    if args.engine:
        print("\n".join(measure(args.engine, args.calls)), flush=True)
        return 0
    if args.limit:
        print("\n".join(limit(min(args.calls, 20))), flush=True)
        return 0
    # one process per engine: two llama.cpp thread pools in one process slow each other down
    print(f"order_number on {min(args.calls, 40)} dev messages, cache off, temperature 0", flush=True)
    installed = installed_engines()
    runs = [["--engine", name] for name in installed]
    if "xllamacpp" in installed:
        runs.append(["--limit"])
    for run in runs:
        subprocess.run([sys.executable, __file__, "--calls", str(args.calls), *run], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
