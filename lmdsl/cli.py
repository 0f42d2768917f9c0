"""The `lmdsl` command line. Nothing imports this module.

Exit codes: 0 success, 1 the run failed (the model, the cache, the setup),
2 the command was given bad input (a bad target, bad JSON, fields that do not fit).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from lmdsl.config import history, using
from lmdsl.errors import InputError, LMDSLError
from lmdsl.fuzzy import FuzzyFunction

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageFailure(Exception):
    """A one-line complaint about the command's input; exits with status 2."""


def load_target(target: str) -> FuzzyFunction[..., Any]:
    """Import `FILE.py:NAME` and return the fuzzy function it names."""
    file_part, sep, name = target.rpartition(":")
    if not sep or not file_part or not name:
        raise UsageFailure(f"target {target!r} must look like FILE.py:FUNCTION")
    module = _import_file(Path(file_part))
    found = getattr(module, name, None)
    if found is None:
        available = sorted(n for n, v in vars(module).items() if isinstance(v, FuzzyFunction))
        raise UsageFailure(f"{file_part} has no {name!r}; its fuzzy functions: {', '.join(available) or 'none'}")
    if not isinstance(found, FuzzyFunction):
        raise UsageFailure(f"{file_part}:{name} is not a fuzzy function (decorate it with @lmdsl.fuzzy)")
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
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageFailure(f"--input is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UsageFailure(f"--input must be a JSON object of named inputs, not {type(data).__name__}")
    try:
        return fn.signature.validate_inputs(data)
    except InputError as error:
        raise UsageFailure(str(error)) from None


def _run(args: argparse.Namespace) -> int:
    fn = load_target(args.target)
    inputs = parse_inputs(fn, args.input)
    options: dict[str, Any] = {}
    if args.model:
        options["model"] = args.model
    if args.no_cache:
        options["cache"] = False
    with using(**options):
        try:
            record = fn.invoke(inputs)
        finally:
            if args.show_prompt and history().last(1):
                print(history().last(1)[0].format(), file=sys.stderr)
    print(fn.signature.output.adapter.dump_json(record.output, indent=2).decode())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmdsl", description="Typed functions that language models implement.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="call a fuzzy function and print its typed result as JSON")
    run.add_argument("target", help="FILE.py:FUNCTION")
    run.add_argument("--input", default="{}", help='the inputs as a JSON object, e.g. \'{"review": "Great!"}\'')
    run.add_argument("--model", help="a model string, e.g. local or local:/path/model.gguf")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the completion cache")
    run.add_argument("--show-prompt", action="store_true", help="print the exact prompt and reply to stderr")
    run.set_defaults(handler=_run)
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


if __name__ == "__main__":
    sys.exit(main())
