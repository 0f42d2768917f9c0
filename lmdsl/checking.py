"""`lmdsl check`: the decoration-time rules over files, every finding listed, nothing run.

Normally a definition that breaks a rule raises `SignatureError` at decoration time.
While `collecting()` is active, the decorators record each finding instead and put a
stand-in in place of what they could not build, so one pass over a module reports
every problem in it. Files are executed under a module name other than `__main__`, so
a script's `if __name__ == "__main__":` block does not run.
"""

from __future__ import annotations

import contextlib
import contextvars
import linecache
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdsl.errors import SignatureError

SKIPPED_DIRS = frozenset({".git", ".venv", "venv", "__pycache__", "node_modules", "build", "dist"})


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    message: str
    code: str | None

    def format(self) -> str:
        code = f"  [{self.code}]" if self.code else ""
        return f"{self.path}:{self.line}: error: {self.message}{code}"


_findings: contextvars.ContextVar[list[Finding] | None] = contextvars.ContextVar("lmdsl_findings", default=None)


@contextlib.contextmanager
def collecting() -> Iterator[list[Finding]]:
    """Record rule violations in the returned list instead of raising them."""
    found: list[Finding] = []
    token = _findings.set(found)
    try:
        yield found
    finally:
        _findings.reset(token)


def report(error: SignatureError, where: Any) -> bool:
    """Record `error` (and every problem it carries) at `where`'s definition, if collecting.
    False means nobody is collecting: the caller raises."""
    found = _findings.get()
    if found is None:
        return False
    path, line = definition_site(where)
    found.extend(Finding(path, line, str(problem), problem.code) for problem in error.problems)
    return True


def definition_site(obj: Any) -> tuple[str, int]:
    """File and line of a function's `def` (past its decorators), as mypy reports it."""
    code = getattr(getattr(obj, "__wrapped__", obj), "__code__", None)
    if code is None:
        return "<unknown>", 0
    path, line = code.co_filename, code.co_firstlineno
    for offset in range(50):
        text = linecache.getline(path, line + offset).lstrip()
        if text.startswith(("def ", "async def ")):
            return path, line + offset
        if not text:
            break
    return path, line


def python_files(targets: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for target in map(Path, targets):
        if target.is_dir():
            files.extend(
                p for p in sorted(target.rglob("*.py"))
                if not any(part in SKIPPED_DIRS or part.startswith(".") for part in p.relative_to(target).parts[:-1])
            )
        else:
            files.append(target)
    return files


def check_files(files: Sequence[Path], *, on_file: Callable[[Path], None] | None = None) -> list[Finding]:
    """Execute each file with findings collected; an import that fails for another reason
    is a finding too (without a code)."""
    import runpy
    import sys

    findings: list[Finding] = []
    for file in files:
        if on_file is not None:
            on_file(file)
        directory = str(file.resolve().parent)
        added = directory not in sys.path
        if added:
            sys.path.insert(0, directory)
        try:
            with collecting() as found:
                try:
                    runpy.run_path(str(file), run_name="__lmdsl_check__")
                except SignatureError as error:  # raised outside a collecting decorator: at the line that raised
                    line = _error_line(error, file)
                    found.extend(Finding(str(file), line, str(problem), problem.code) for problem in error.problems)
                except Exception as error:
                    found.append(Finding(str(file), _error_line(error, file), f"cannot be loaded: {type(error).__name__}: {error}", None))
            findings.extend(found)
        finally:
            if added:
                sys.path.remove(directory)
    return sorted(findings)


def _error_line(error: BaseException, file: Path) -> int:
    """The deepest line of `file` in the error's traceback."""
    line = 0
    traceback = error.__traceback__
    target = str(file.resolve())
    while traceback is not None:
        if str(Path(traceback.tb_frame.f_code.co_filename).resolve()) == target:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
