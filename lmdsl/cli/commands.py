"""The `lmdsl` command line. Nothing imports this module.

Exit codes: 0 success; 1 the run failed (the model, a provider, the program, the cache);
2 anything the user typed cannot be used: a bad target, `--input` that is not JSON (or too
deep, or an integer past Python's digit limit), fields that do not fit, a `--model` that
names no usable model, a file that is missing, unreadable or not a regular file, an
artifact that is malformed, a dev set whose examples do not fit the program or the metric,
a program that fails on every example of its compile. Each error is one line on stderr
(`lmdsl: error: ...`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from lmdsl.calls.function import FuzzyFunction
from lmdsl.calls.records import capture
from lmdsl.config import history, using
from lmdsl.errors import ConfigurationError, InputError, LMDSLError, OutputError
from lmdsl.lm import MODEL_FORMS, resolve_model
from lmdsl.params import DemoFile, read_params_file
from lmdsl.program import Program, output_adapter
from lmdsl.unicode import printable

if TYPE_CHECKING:
    from lmdsl.data import Example
    from lmdsl.evaluation import EvaluationResult

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageFailure(Exception):
    """A one-line complaint about the command's input; exits with status 2."""


def load_target(target: str) -> FuzzyFunction[..., Any]:
    """Import `FILE.py:NAME` and return the fuzzy function it names."""
    found = _load(target, FuzzyFunction, "a fuzzy function (decorate it with @lmdsl.fuzzy)", "fuzzy functions")
    assert isinstance(found, FuzzyFunction)
    return found


def load_program(target: str) -> Program[..., Any]:
    """Import `FILE.py:NAME` and return the program it names."""
    found = _load(target, Program, "a program (decorate it with @lmdsl.program)", "programs")
    assert isinstance(found, Program)
    return found


def load_runnable(target: str) -> FuzzyFunction[..., Any] | Program[..., Any]:
    """Import `FILE.py:NAME` and return the fuzzy function or program it names."""
    found = _load(
        target,
        (FuzzyFunction, Program),
        "a fuzzy function or a program (decorate it with @lmdsl.fuzzy or @lmdsl.program)",
        "fuzzy functions",
        also=(Program, "programs"),
    )
    assert isinstance(found, (FuzzyFunction, Program))
    return found


def _load(
    target: str,
    kind: type | tuple[type, ...],
    what: str,
    plural: str = "names",
    *,
    also: tuple[type, str] | None = None,
) -> object:
    file_part, sep, name = target.rpartition(":")
    if not sep or not file_part or not name:
        placeholder = {"fuzzy functions": "FUNCTION", "programs": "PROGRAM"}.get(plural, "NAME")
        raise UsageFailure(f"target {target!r} must look like FILE.py:{placeholder}")
    module = _import_file(Path(file_part))
    found = getattr(module, name, None)
    if found is None:
        groups = [(kind[0] if isinstance(kind, tuple) else kind, plural), *([also] if also else [])]
        listed = "; ".join(
            f"its {label}: {', '.join(sorted(n for n, v in vars(module).items() if isinstance(v, group))) or 'none'}"
            for group, label in groups
        )
        raise UsageFailure(f"{file_part} has no {name!r}; {listed}")
    if not isinstance(found, kind):
        raise UsageFailure(f"{file_part}:{name} is not {what}")
    return found


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageFailure(f"no such file: {path}")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem if path.stem not in sys.modules else f"_lmdsl_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageFailure(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except LMDSLError:
        raise
    except Exception as error:
        raise UsageFailure(f"cannot import {path}: {type(error).__name__}: {error}") from None
    return module


def parse_inputs(fn: FuzzyFunction[..., Any], text: str) -> dict[str, Any]:
    data = _input_object(text)
    try:
        return fn.signature.validate_inputs(data)
    except InputError as error:
        raise UsageFailure(str(error)) from None


def model_option(model: str | None) -> dict[str, Any]:
    """`using(...)` options for a `--model` the user typed: a string that names no usable model
    (unknown, a missing GGUF file, a runtime not installed) is a usage error, caught before any work."""
    if not model:
        return {}
    try:
        resolve_model(model)
    except ConfigurationError as error:
        first, more, _ = printable(str(error)).partition("\n")  # an unknown string's error lists the forms below
        hint = f" {', '.join(MODEL_FORMS)}" if more and first.startswith("unknown model string") else ""
        raise UsageFailure(f"--model: {first}{hint}") from None
    return {"model": model}


def parse_program_inputs(program: Program[..., Any], text: str) -> dict[str, Any]:
    """`--input` for a program: a JSON object of its parameters by name, checked as a run checks them."""
    data = _input_object(text)
    try:
        return program.validate_inputs(data)
    except InputError as error:
        raise UsageFailure(str(error)) from None


def _input_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except RecursionError:
        raise UsageFailure("--input is nested too deeply") from None
    except ValueError as error:  # bad JSON, or an integer longer than Python's digit limit
        raise UsageFailure(f"--input is not valid JSON: {printable(str(error))}") from None
    if not isinstance(data, dict):
        raise UsageFailure(f"--input must be a JSON object of named inputs, not {type(data).__name__}")
    return data


def _run(args: argparse.Namespace) -> int:
    options = model_option(args.model)
    if args.no_cache:
        options["cache"] = False
    target = load_runnable(args.target)
    if isinstance(target, Program):
        return _run_program(target, args, options)
    fn = target
    inputs = parse_inputs(fn, args.input)
    with using(**options):
        try:
            record = fn.invoke(inputs)
        finally:
            if args.show_prompt and history().last(1):
                print(history().last(1)[0].format(), file=sys.stderr)
    print(fn.signature.output.adapter.dump_json(record.output, indent=2).decode())
    return 0


def _run_program(program: Program[..., Any], args: argparse.Namespace, options: dict[str, Any]) -> int:
    """`lmdsl run` on a program: its inputs by name, its output printed as JSON (`--show-prompt`:
    every fuzzy call of the run)."""
    inputs = parse_program_inputs(program, args.input)
    with using(**options), capture() as records:
        try:
            result = program.invoke(inputs)
        finally:
            if args.show_prompt:
                for record in records:
                    print(record.format(), file=sys.stderr)
    print(output_adapter(program).dump_json(result.output, indent=2, fallback=repr).decode())
    return 0


def _compile(args: argparse.Namespace) -> int:
    from lmdsl.compiler.base import journaling
    from lmdsl.compiler.decorator import compile_program, keeps_a_study
    from lmdsl.evaluation import evaluate
    from lmdsl.report import build_report
    from lmdsl.report.page import plotly

    program = load_program(args.target)
    config = program.compile_config
    if config is None:
        raise UsageFailure(f"{args.target} has no compile configuration: decorate it with @lmdsl.optimize(...)")
    if args.storage is not None and not keeps_a_study(config.optimizer):
        raise UsageFailure(f"--storage: {type(config.optimizer).__name__} keeps no study (MIPRO does)")
    _show_compiler_progress()
    devset = list(config.devset if config.devset is not None else config.trainset)
    if not devset:
        raise UsageFailure(f"{args.target}: the compile configuration has no examples to score")
    options = model_option(args.model)
    if args.report is not None:
        plotly()  # a missing plotting library fails before the compile, not after it
    program.reset_params()  # the baseline is the uncompiled program, even when an artifact exists
    with using(**options):
        before = evaluate(program, devset, config.metric, threads=args.threads, progress=None)
        _check_it_runs(program, before)
        with journaling() as scored:
            compiled = compile_program(program, write=not args.dry_run, storage=args.storage)
        weights = {"model": compiled.weights.model} if compiled.weights is not None else {}  # fine-tuned ones
        with program.with_params(compiled.params), using(**weights):
            after = evaluate(program, devset, config.metric, threads=args.threads, progress=None)
        if args.report is not None:
            report = build_report(program, compiled, scored, config.trainset, config.devset, config.metric)
            print(f"wrote {report.write(args.report)}")
    rows = [
        _cost_row(
            "uncompiled",
            f"{before.score:.1f}",
            before.lm_calls,
            before.cached_calls,
            before.total_tokens,
            before.seconds,
        ),
        _cost_row(
            "compiled", f"{after.score:.1f}", after.lm_calls, after.cached_calls, after.total_tokens, after.seconds
        ),
        _cost_row("compiling", "", compiled.lm_calls, compiled.cached_calls, compiled.tokens, compiled.seconds),
    ]
    header = ("", "score", "LM calls", "cached calls", "tokens", "seconds")
    _table(f"{program.name} on {len(devset)} dev examples", header, rows)
    if config.artifact is not None and not args.dry_run:
        program.reset_params(reload_artifact=True)
        print(f"wrote {config.artifact}")
    return 0


def _cost_row(label: str, score: str, lm_calls: int, cached: int, tokens: int, seconds: float) -> tuple[str, ...]:
    return (label, score, str(lm_calls), str(cached), str(tokens), f"{seconds:.1f}")


def _check_it_runs(program: Program[..., Any], before: EvaluationResult) -> None:
    """After the uncompiled program's evaluation: name the first example's error, if one failed,
    and stop (a usage error) when every example failed without the model's output being at
    fault (an `OutputError`, which demos may fix): then the program cannot run, and
    compiling would only repeat the error."""
    first = before.first_error
    if first is None:
        return
    described = first.describe_error()
    failed = [row for row in before.rows if row.error is not None]
    at_fault = (OutputError.__name__, "AssertionFailed")
    if len(failed) == len(before.rows) and not any(row.error_type in at_fault for row in failed):
        raise UsageFailure(
            f"{program.name} cannot run: every one of its {len(before.rows)} dev example(s) failed; the first: "
            f"{described}"
        )
    print(
        f"compile: uncompiled, {len(failed)} of {len(before.rows)} example(s) failed; the first: {described}",
        file=sys.stderr,
    )


def _check(args: argparse.Namespace) -> int:
    from lmdsl.cli.check import check_files, python_files

    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        raise UsageFailure(f"no such file or folder: {missing[0]}")
    files = python_files(args.paths)
    findings = check_files(files)
    for finding in findings:
        print(finding.format())
    if findings:
        where = len({finding.path for finding in findings})
        print(
            f"Found {len(findings)} error{'s' * (len(findings) != 1)} in {where} file{'s' * (where != 1)} "
            f"(checked {len(files)} source file{'s' * (len(files) != 1)})"
        )
        return EXIT_FAILED
    print(f"Success: no issues found in {len(files)} source file{'s' * (len(files) != 1)}")
    return 0


class _ToStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each line to `sys.stderr` as it is then, not as it was when the handler was made."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _show_compiler_progress() -> None:
    """The optimizers log each candidate or trial; show those lines on stderr (once per process)."""
    compiler_log = logging.getLogger("lmdsl.compiler")
    if not any(getattr(h, "lmdsl_cli", False) for h in compiler_log.handlers):
        handler = _ToStderr()
        handler.setFormatter(logging.Formatter("compile: %(message)s"))
        handler.lmdsl_cli = True  # type: ignore[attr-defined]
        compiler_log.addHandler(handler)
    compiler_log.setLevel(logging.INFO)


def _eval(args: argparse.Namespace) -> int:
    from lmdsl.data import load_examples
    from lmdsl.evaluation import evaluate
    from lmdsl.report import evaluation_report
    from lmdsl.report.page import plotly

    program = load_program(args.target)
    if args.metric:
        metric = _load(args.metric, object, "a metric", "names")
    elif program.compile_config is not None:
        metric = program.compile_config.metric
    else:
        raise UsageFailure("give --metric FILE.py:NAME, or decorate the program with @lmdsl.optimize(metric=...)")
    if not callable(metric):
        raise UsageFailure(f"{args.metric} is not callable")
    try:
        devset = load_examples(Path(args.devset))
    except OSError as error:
        raise UsageFailure(f"cannot read {args.devset}: {error.strerror or error}") from None
    except InputError as error:
        raise UsageFailure(str(error)) from None
    if not devset:
        raise UsageFailure(f"{args.devset} holds no examples")
    check_devset(program, devset, metric, args.devset)
    if args.report is not None:
        plotly()  # a missing plotting library fails before the evaluation, not after it
    options = model_option(args.model)
    with using(**options):
        result = evaluate(program, devset, metric, threads=args.threads, progress=None)
    print(result.summary())
    if args.report is not None:
        report = evaluation_report(result, title=f"{program.name} on {args.devset}")
        print(f"wrote {report.write(args.report)}")
    for output in args.output or ():
        path = Path(output)
        (result.to_csv if path.suffix == ".csv" else result.to_json)(path)
        print(f"wrote {path}")
    return 0


def check_devset(program: Program[..., Any], devset: Sequence[Example], metric: Any, source: str) -> None:
    """Before any run: every example has the program's inputs, of the right types, and every
    field the metric reads (`example.NAME` in its code). The first that has not is a usage error
    naming the example (counted from 1) and the field."""
    from lmdsl.data import metric_fields

    needs = metric_fields(metric)
    metric_name = getattr(metric, "__name__", type(metric).__name__)
    for number, example in enumerate(devset, start=1):
        fields = list(example.fields)
        has = f"its fields: {', '.join(fields) or 'none'}"
        try:
            program.validate_inputs(example.inputs_for(program))
        except InputError as error:
            raise UsageFailure(f"{source}: example {number}: {error}; {has}") from None
        missing = next((name for name in needs if name not in example.fields), None)
        if missing is not None:
            raise UsageFailure(
                f"{source}: example {number} has no field {missing!r}, which the metric {metric_name} reads "
                f"(example.{missing}); {has}"
            )


def _inspect(args: argparse.Namespace) -> int:
    from lmdsl.errors import ArtifactError

    try:
        data = read_params_file(Path(args.artifact))
    except ArtifactError as error:
        raise UsageFailure(str(error)) from None
    extra = data.model_extra or {}
    print(f"{data.program}: {len(data.functions)} fuzzy function(s)")
    for key in ("model", "scores", "cost", "weights"):  # weights: the fine-tuned adapter's entry
        if key in extra:
            print(f"{key}: {json.dumps(extra[key])}")
    program = load_program(args.program) if args.program else None
    if program is not None:
        program.load(Path(args.artifact))
    for name, entry in data.functions.items():
        nearest = entry.nearest
        chosen = "" if nearest is None else f", and per call the {nearest.k} nearest of a pool of {len(nearest.pool)}"
        print(f"\n== {name} (signature {entry.signature}, {len(entry.demos)} demo(s){chosen})")
        if program is not None:
            for message in program.functions[name].prompt_prefix:
                print(f"[{message.role}]\n{message.content}")
        else:
            print(f"[instructions]\n{entry.instructions}")
            _print_demos("demo", entry.demos)
        if nearest is not None:  # the prompt prefix holds none of them: they are chosen at each call
            _print_demos("pool demo", nearest.pool)
    for line in _lineage(extra.get("optimizer")):
        print(line)
    return 0


def _print_demos(kind: str, demos: Sequence[DemoFile]) -> None:
    for number, demo in enumerate(demos, 1):
        print(f"[{kind} {number}] inputs: {json.dumps(demo.inputs, ensure_ascii=False)}")
        if demo.reasoning:
            print(f"  reasoning: {demo.reasoning}")
        print(f"  output: {json.dumps(demo.output, ensure_ascii=False)}")


def _lineage(settings: object) -> list[str]:
    """GEPA's record of how the winning instructions came about: each step, its score and what changed."""
    chain = settings.get("lineage") if isinstance(settings, dict) else None
    if not isinstance(chain, list) or not chain:
        return []
    lines = ["\n== lineage of the chosen instructions (validation score at each step)"]
    before: dict[str, object] = {}
    for step in chain:
        if not isinstance(step, dict):
            continue
        found = step.get("instructions")
        instructions: dict[str, object] = found if isinstance(found, dict) else {}
        lines.append(
            f"#{step.get('candidate')} {step.get('origin')} (iteration {step.get('iteration')}, "
            f"parents {step.get('parents')}): {step.get('score')}"
        )
        for name, text in instructions.items():
            if before.get(name) != text:
                lines.append(f"  {name}: {json.dumps(text, ensure_ascii=False)}")
        before = dict(instructions)
    return lines


def _table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A rich table on a terminal, aligned plain text otherwise."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for number, column in enumerate(header):
        table.add_column(column, justify="left" if number == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=100).print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmdsl", description="Typed functions that language models implement.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="call a fuzzy function or run a program and print its typed result as JSON")
    run.add_argument("target", help="FILE.py:FUNCTION or FILE.py:PROGRAM")
    run.add_argument("--input", default="{}", help='the inputs as a JSON object, e.g. \'{"review": "Great!"}\'')
    run.add_argument("--model", help="a model string, e.g. local or local:/path/model.gguf")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the completion cache")
    run.add_argument("--show-prompt", action="store_true", help="print the exact prompt and reply to stderr")
    run.set_defaults(handler=_run)

    compile_ = commands.add_parser("compile", help="compile a program (@lmdsl.optimize) and write its artifact")
    compile_.add_argument("target", help="FILE.py:PROGRAM")
    compile_.add_argument("--model", help="a model string (default: the configured model)")
    compile_.add_argument("--threads", type=int, default=4, help="parallel examples when evaluating")
    compile_.add_argument("--dry-run", action="store_true", help="do not write the artifact")
    compile_.add_argument(
        "--storage",
        metavar="URL",
        help="where MIPRO keeps its Optuna study, e.g. postgresql://host/db, to share it between workers (default: an SQLite file beside the artifact)",
    )
    compile_.add_argument(
        "--report", metavar="FILE.html", help="write a report of the compile: one self-contained HTML file"
    )
    compile_.set_defaults(handler=_compile)

    eval_ = commands.add_parser("eval", help="score a program on a dev set")
    eval_.add_argument("target", help="FILE.py:PROGRAM")
    eval_.add_argument("--devset", required=True, help="a JSONL or CSV file of examples")
    eval_.add_argument("--metric", help="FILE.py:NAME (default: the metric given to @lmdsl.optimize)")
    eval_.add_argument("--model", help="a model string")
    eval_.add_argument("--threads", type=int, default=4)
    eval_.add_argument("--output", action="append", help="write the rows to a .json or .csv file (repeatable)")
    eval_.add_argument(
        "--report", metavar="FILE.html", help="write a report of the evaluation: one self-contained HTML file"
    )
    eval_.set_defaults(handler=_eval)

    check = commands.add_parser(
        "check", help="report every fuzzy function, check, metric, example and tool that breaks a rule (runs no model)"
    )
    check.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="Python files or folders to check")
    check.set_defaults(handler=_check)

    inspect_ = commands.add_parser("inspect", help="show the instructions and demos in an artifact")
    inspect_.add_argument("artifact", help="an artifact or parameter file")
    inspect_.add_argument("--program", help="FILE.py:PROGRAM, to print the exact prompt prefixes")
    inspect_.set_defaults(handler=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except UsageFailure as error:
        print(f"lmdsl: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except LMDSLError as error:
        print(f"lmdsl: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED
