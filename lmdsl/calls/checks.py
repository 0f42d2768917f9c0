"""`ensure` checks: a registered check bound to the inputs it asks for, and its verdict."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lmdsl.errors import Retry


class AssertionWarning(UserWarning):
    """A soft check (`ensure(soft=True)`, `suggest`) still failed; the run went on with the last output."""


@dataclass(frozen=True, slots=True)
class Check:
    """A registered `ensure` check, bound to the inputs it asks for by name."""

    name: str
    call: Callable[[Any, Mapping[str, Any]], Any]
    soft: bool

    def verdict(self, output: Any, inputs: Mapping[str, Any]) -> str | None:
        """None if the output passes; else why not. `raise Retry(why)` rejects, and so does
        returning `False` (a plain predicate), so `ensure(lambda out: out > 0)` is not a no-op."""
        try:
            result = self.call(output, inputs)
        except Retry as rejection:
            return str(rejection)
        if result is False:
            return f"the output fails the check {self.name}"
        return None


def first_rejection(checks: tuple[Check, ...], output: Any, inputs: Mapping[str, Any]) -> tuple[Check, str] | None:
    """The first check that rejects `output`, with its reason; None when all pass."""
    for check in checks:
        reason = check.verdict(output, inputs)
        if reason is not None:
            return check, reason
    return None
