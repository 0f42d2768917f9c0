#!/usr/bin/env python
# A fuzzy function's body is only its docstring, which mypy reports as `empty-body`.
# mypy: disable-error-code="empty-body"
"""What the tracing check costs a fuzzy call when no tracer provider is set.

`FuzzyFunction.invoke` looks for an OpenTelemetry tracer provider, then runs the call's body
(`_invoke`). This times both in one process, interleaved, on an instant backend with the cache off:
the difference is everything tracing adds to a call while it is off. CPU time (process_time), the
median of the blocks after a warm-up block.

    python benchmarks/tracing_overhead.py [--blocks 12] [--calls 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import lmdsl
from lmdsl.lm.types import Completion, Request


class Instant:
    name = "instant"
    cacheable = False
    live = False

    def complete(self, request: Request) -> Completion:
        return Completion('{"capital": "Paris"}')


@lmdsl.fuzzy
def capital(question: str) -> str:
    """Answer the question in a few words."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    if "opentelemetry.trace" in sys.modules:
        raise SystemExit("OpenTelemetry is imported: this measures the call with tracing off")
    inputs = {"question": "What is the capital of France?"}
    cases: list[tuple[Callable[[], object], list[float]]] = [
        (lambda: capital.invoke(inputs), []),
        (lambda: capital._invoke(inputs, (), None), []),
    ]
    with lmdsl.using(model=Instant(), cache=False):
        for block in range(args.blocks):
            for call, times in cases:
                started = time.process_time()
                for _ in range(args.calls):
                    call()
                if block:  # the first block warms up
                    times.append((time.process_time() - started) / args.calls * 1e6)
    (_, checked), (_, bare) = cases
    print(
        f"invoke (with the tracing check): {statistics.median(checked):.2f} µs [{min(checked):.2f}-{max(checked):.2f}]; "
        f"its body alone: {statistics.median(bare):.2f} µs [{min(bare):.2f}-{max(bare):.2f}]; "
        f"difference of the medians {statistics.median(checked) - statistics.median(bare):+.2f} µs (CPU per call)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
