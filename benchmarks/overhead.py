#!/usr/bin/env python
# A fuzzy function's body is only its docstring, which mypy reports as `empty-body`.
# mypy: disable-error-code="empty-body"
"""How much time lmdsl itself adds to a fuzzy call, a cache hit and `import lmdsl`.

The model is an instant backend that returns a precomputed `Completion`, so
everything measured is the framework: binding arguments, building the request,
parsing and validating the reply, recording the call. Nothing is subtracted;
the row "backend.complete() directly" is the floor for comparison.

    python benchmarks/overhead.py                 # the full run (about 10 seconds)
    python benchmarks/overhead.py --quick         # a smoke run
    python benchmarks/overhead.py --json out.json

Each figure is the median over timed blocks (after a warm-up block) of the time
per call within a block, as wall time (perf_counter, what the targets are judged
on) and as this process's CPU time (process_time, which leaves out the time the
process waited for a core, so it is the steadier figure on a busy machine).
Targets: under 40 µs per call, under 20 µs per cache hit, under 150 ms to
import. For comparison, DSPy 3.4.1 measured about 400 µs per `Predict` call and
650 ms to import on the same machines.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

import lmdsl
from lmdsl.cache import CachedBackend, CacheStore

ROOT = Path(__file__).resolve().parent.parent

CALL_TARGET_US = 40.0
HIT_TARGET_US = 20.0
IMPORT_TARGET_MS = 150.0
DSPY_CALL_US = 400.0
DSPY_IMPORT_MS = 650.0


# -- the functions under test -----------------------------------------------------------
class Answer(BaseModel):
    answer: str
    confidence: float


@lmdsl.fuzzy
def capital(question: str) -> str:
    """Answer the question in a few words."""


@lmdsl.fuzzy(strategy=lmdsl.chain_of_thought)
def grounded(question: str, context: list[str]) -> Answer:
    """Answer the question using only the context passages."""


QUESTION = "What is the capital of France?"
CONTEXT = [
    "Paris is the capital and largest city of France.",
    "France is a country in Western Europe.",
    "The Seine flows through Paris.",
]
CAPITAL_REPLY = json.dumps({"capital": "Paris"})
CAPITAL_VALUE = "Paris"
GROUNDED_REPLY = json.dumps(
    {"reasoning": "The first passage says Paris is the capital.", "answer": "Paris", "confidence": 0.9}
)
GROUNDED_VALUE = Answer(answer="Paris", confidence=0.9)


# -- backends ---------------------------------------------------------------------------
class InstantBackend:
    """Returns one precomputed `Completion` and keeps nothing, so the time measured is lmdsl's."""

    def __init__(self, text: str, name: str = "instant") -> None:
        self._completion = lmdsl.Completion(text=text, usage=lmdsl.Usage(100, 10))
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def complete(self, request: lmdsl.Request) -> lmdsl.Completion:
        return self._completion


class CountingBackend(InstantBackend):
    """An instant backend that may be cached and counts the requests that reach it."""

    cacheable = True

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text, name)
        self.calls = 0

    def complete(self, request: lmdsl.Request) -> lmdsl.Completion:
        self.calls += 1
        return super().complete(request)


# -- measuring --------------------------------------------------------------------------
@dataclass
class Timing:
    """Per-call (or per-run) figures of each timed block: wall time and this process's CPU time."""

    wall: list[float]
    cpu: list[float]


@dataclass
class Row:
    section: str
    name: str
    unit: str
    median: float
    low: float
    high: float
    cpu_median: float | None
    wall: list[float]
    cpu: list[float] | None
    target: float | None = None
    note: str = ""
    ok: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.target is not None:
            self.ok = self.median < self.target


@dataclass
class Case:
    """One per-call measurement: `call` runs inside `context()`, and `check` asserts on what it returned."""

    section: str
    name: str
    call: Callable[[], object]
    check: Callable[[object], None]
    context: Callable[[], AbstractContextManager[object]] = nullcontext
    before_each: Callable[[], object] | None = None
    calls_divisor: int = 1
    target: float | None = None
    note: str = ""
    after: Callable[[], None] | None = None  # checks run inside the context right after the last block


def time_block(case: Case, calls: int) -> tuple[float, float]:
    """Microseconds of wall and CPU time per call over `calls` calls of one case."""
    gc.collect()
    result: object = None
    call, before_each = case.call, case.before_each
    with case.context():
        if before_each is None:
            cpu, start = time.process_time_ns(), time.perf_counter_ns()
            for _ in range(calls):
                result = call()
            wall, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu
        else:
            cpu, start = time.process_time_ns(), time.perf_counter_ns()
            for _ in range(calls):
                before_each()
                result = call()
            wall, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu
    case.check(result)
    return wall / calls / 1000, cpu / calls / 1000


def run_cases(cases: list[Case], *, blocks: int, calls: int) -> list[Row]:
    """A warm-up block, then `blocks` timed blocks of every case in turn (round robin), so that a
    slow spell of the machine falls on all cases alike rather than on whichever ran then."""
    timings = [Timing([], []) for _ in cases]
    for block in range(blocks + 1):
        for case, timing in zip(cases, timings):
            wall, cpu = time_block(case, max(1, calls // case.calls_divisor))
            if block:  # block 0 is the warm-up
                timing.wall.append(wall)
                timing.cpu.append(cpu)
            if block == blocks and case.after is not None:  # before another case adds to the history
                with case.context():
                    case.after()
    return [
        row(case.section, case.name, timing, "µs", target=case.target, note=case.note)
        for case, timing in zip(cases, timings)
    ]


def row(section: str, name: str, timing: Timing | list[float], unit: str, **extra: Any) -> Row:
    wall, cpu = (timing.wall, timing.cpu) if isinstance(timing, Timing) else (timing, None)
    return Row(
        section,
        name,
        unit,
        statistics.median(wall),
        min(wall),
        max(wall),
        None if cpu is None else statistics.median(cpu),
        wall,
        cpu,
        **extra,
    )


def equals(expected: object) -> Callable[[object], None]:
    def check(value: object) -> None:
        assert value == expected, f"expected {expected!r}, got {value!r}"

    return check


def is_completion(text: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        assert isinstance(value, lmdsl.Completion) and value.text == text, f"unexpected {value!r}"

    return check


def cached_store(backend: lmdsl.Backend) -> CacheStore:
    """The store behind the cache that the configuration in force wraps around `backend`."""
    wrapped = lmdsl.settings().backend(backend)
    assert isinstance(wrapped, CachedBackend), f"the backend is not cached: {wrapped!r}"
    return wrapped.store


def call_cases() -> list[Case]:
    """Every call goes through lmdsl with the cache off; the model answers instantly."""
    section = "fuzzy call, instant backend, cache off"
    plain = InstantBackend(CAPITAL_REPLY)
    reasoned = InstantBackend(GROUNDED_REPLY)
    with lmdsl.using(model=plain, cache=False):
        assert capital(QUESTION) == CAPITAL_VALUE
        record = lmdsl.history(1)[0]
        assert record.output == CAPITAL_VALUE and not record.cached and len(record.attempts) == 1
        request = record.attempts[-1].request
    with lmdsl.using(model=reasoned, cache=False):
        assert grounded(QUESTION, CONTEXT) == GROUNDED_VALUE
        record = lmdsl.history(1)[0]
        assert record.reasoning and not record.cached and len(record.attempts) == 1

    def last_call_fresh(expected: object) -> Callable[[], None]:
        def after() -> None:
            record = lmdsl.history(1)[0]
            assert record.output == expected and not record.cached, record

        return after

    return [
        Case(
            section,
            "backend.complete() directly (floor)",
            lambda: plain.complete(request),
            is_completion(CAPITAL_REPLY),
        ),
        Case(
            section,
            "predict: (question: str) -> str",
            lambda: capital(QUESTION),
            equals(CAPITAL_VALUE),
            context=lambda: lmdsl.using(model=plain, cache=False),
            target=CALL_TARGET_US,
            after=last_call_fresh(CAPITAL_VALUE),
        ),
        Case(
            section,
            "chain_of_thought: (question, context: list[str]) -> Answer",
            lambda: grounded(QUESTION, CONTEXT),
            equals(GROUNDED_VALUE),
            context=lambda: lmdsl.using(model=reasoned, cache=False),
            target=CALL_TARGET_US,
            after=last_call_fresh(GROUNDED_VALUE),
        ),
    ]


def caching(backend: lmdsl.Backend, directory: Path) -> Callable[[], AbstractContextManager[object]]:
    """A fresh `using` block that runs `backend` with the cache on, in `directory`."""
    return lambda: lmdsl.using(model=backend, cache=True, cache_dir=directory)


def hit_cases(directory: Path) -> list[Case]:
    """The same input again and again with the cache on: one miss first, then only hits."""
    section = "cache hit, cache on"
    cases: list[Case] = []

    def only_hits(backend: CountingBackend) -> Callable[[], None]:
        def after() -> None:
            assert lmdsl.history(1)[0].cached, "the last call was not served from the cache"
            assert backend.calls == 1, f"{backend.calls} requests reached the backend"

        return after

    repeated: list[tuple[str, CountingBackend, Callable[[], object], object]] = [
        (
            "predict, memory hit",
            CountingBackend(CAPITAL_REPLY, "counting-capital"),
            lambda: capital(QUESTION),
            CAPITAL_VALUE,
        ),
        (
            "chain_of_thought, memory hit",
            CountingBackend(GROUNDED_REPLY, "counting-grounded"),
            lambda: grounded(QUESTION, CONTEXT),
            GROUNDED_VALUE,
        ),
    ]
    for name, backend, call, expected in repeated:
        context = caching(backend, directory)
        with context():
            assert call() == expected and backend.calls == 1  # the one miss, written to SQLite
        cases.append(
            Case(section, name, call, equals(expected), context=context, target=HIT_TARGET_US, after=only_hits(backend))
        )

    backend = CountingBackend(CAPITAL_REPLY, "counting-sqlite")
    context = caching(backend, directory)
    with context():
        assert capital(QUESTION) == CAPITAL_VALUE and backend.calls == 1
        store = cached_store(backend)
    cases.append(
        Case(
            section,
            "predict, SQLite hit (memory cleared each call)",
            lambda: capital(QUESTION),
            equals(CAPITAL_VALUE),
            context=context,
            before_each=store.clear_memory,
            calls_divisor=5,
            note="includes store.clear_memory()",
            after=only_hits(backend),
        )
    )
    return cases


def _python(code: str, env: dict[str, str]) -> tuple[float, str]:
    """Run `python -c code` from the project root: wall seconds and stdout."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


def bench_import(runs: int) -> list[Row]:
    """Import time as an installed package sees it: bytecode compiled once (into a private
    PYTHONPYCACHEPREFIX, so nothing is written into the project), then fresh processes."""
    section = "import lmdsl, fresh processes, bytecode cached"
    timed = (
        "import time; c = time.process_time(); t = time.perf_counter(); import lmdsl; "
        "t = time.perf_counter() - t; c = time.process_time() - c; "
        f"assert lmdsl.__file__.startswith({str(ROOT)!r}), lmdsl.__file__; print(t, c)"
    )
    as_is = dict(os.environ)
    in_process = Timing([], [])
    uncompiled = Timing([], [])
    wall_import: list[float] = []
    wall_pass: list[float] = []

    def measure(env: dict[str, str], into: Timing) -> None:
        wall, cpu = _python(timed, env)[1].split()
        into.wall.append(float(wall) * 1000)
        into.cpu.append(float(cpu) * 1000)

    with tempfile.TemporaryDirectory(prefix="lmdsl-bench-pyc-") as prefix:
        compiled = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        compiled["PYTHONPYCACHEPREFIX"] = prefix
        _python("import lmdsl", compiled)  # writes the bytecode of everything imported
        _python("import lmdsl", as_is)  # warms the file system cache
        for _ in range(runs):
            measure(compiled, in_process)
            wall_import.append(_python("import lmdsl", compiled)[0] * 1000)
            wall_pass.append(_python("pass", compiled)[0] * 1000)
            measure(as_is, uncompiled)
    difference = [a - b for a, b in zip(wall_import, wall_pass)]
    flag = os.environ.get("PYTHONDONTWRITEBYTECODE")
    return [
        row(section, "import lmdsl (in-process)", in_process, "ms", target=IMPORT_TARGET_MS),
        row(section, 'python -c "import lmdsl" (process wall time)', wall_import, "ms"),
        row(section, 'python -c "pass" (process wall time)', wall_pass, "ms"),
        row(section, "difference of the two", difference, "ms"),
        row(
            section,
            "import lmdsl, environment as is (in-process)",
            uncompiled,
            "ms",
            note=f"PYTHONDONTWRITEBYTECODE={flag}" if flag else "bytecode as the environment has it",
        ),
    ]


# -- reporting --------------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows) + 2
    lines: list[str] = []
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            lines += ["", section, "-" * len(section)]
            lines.append(f"  {'':<{width}}{'median':>9}     {'[min–max]':>16}  {'cpu':>8}    target")
        spread = f"[{r.low:.1f}–{r.high:.1f}]"
        cpu = "" if r.cpu_median is None else f"{r.cpu_median:8.1f}"
        target = "" if r.target is None else f"< {r.target:g} {r.unit}  {'ok' if r.ok else 'MISSED'}"
        note = f"  ({r.note})" if r.note else ""
        lines.append(f"  {r.name:<{width}}{r.median:9.1f} {r.unit:<3}{spread:>18}  {cpu:>8}    {target}{note}")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "pydantic": pydantic.VERSION,
        "lmdsl": lmdsl.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def trace_everything() -> None:
    """Set an OpenTelemetry SDK tracer provider whose finished spans are dropped, so lmdsl traces
    every call and what is measured is lmdsl's tracing and the SDK's span handling, not an export."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: typing.Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per measurement (default 5)")
    parser.add_argument("--calls", type=int, default=5000, help="calls per block (default 5000)")
    parser.add_argument("--import-runs", type=int, default=7, help="fresh processes for import timing (default 7)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 blocks of 500 calls, 3 imports")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--otel", action="store_true", help="with an OpenTelemetry SDK tracer provider set: what tracing costs when on"
    )
    args = parser.parse_args(argv)
    if args.otel:
        trace_everything()
    if args.quick:
        args.blocks, args.calls, args.import_runs = 3, 500, 3

    env = environment()
    print(
        f"lmdsl {env['lmdsl']}, Python {env['python']}, pydantic {env['pydantic']}, {env['cpus']} CPUs, "
        f"load average {env['load_average'][0]:.2f}"
    )
    print(
        f"median of {args.blocks} blocks x {args.calls} calls after a warm-up block, blocks of all rows interleaved "
        f"(imports: {args.import_runs} processes); [min–max] of wall time; cpu = median process CPU time"
    )
    with tempfile.TemporaryDirectory(prefix="lmdsl-bench-", ignore_cleanup_errors=True) as directory:
        cases = call_cases() + hit_cases(Path(directory))
        rows = run_cases(cases, blocks=args.blocks, calls=args.calls)
    rows += bench_import(args.import_runs)
    print(table(rows))
    print(
        f"\nreference: DSPy 3.4.1 measured about {DSPY_CALL_US:g} µs per Predict call "
        f"and {DSPY_IMPORT_MS:g} ms to import on these machines."
    )
    missed = [r.name for r in rows if r.ok is False]
    print("all targets met" if not missed else f"targets missed: {'; '.join(missed)}")
    if args.json:
        payload = {
            "environment": env,
            "blocks": args.blocks,
            "calls": args.calls,
            "import_runs": args.import_runs,
            "rows": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
