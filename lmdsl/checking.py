"""Collect mode: rule findings recorded instead of raised (what `lmdsl check` switches on).

Normally a definition that breaks a rule raises `SignatureError` at decoration time.
While `collecting()` is active, the decorators record each finding instead and put a
stand-in in place of what they could not build, so one pass over a module reports
every problem in it. The file runner is `lmdsl.cli.check`.
"""

from __future__ import annotations

import contextlib
import contextvars
import linecache
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lmdsl.errors import SignatureError


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
