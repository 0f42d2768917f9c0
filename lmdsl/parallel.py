"""Running a function over many inputs in threads, in order, with errors kept per item."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lmdsl.warn import handing_off

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """One item's result: its value, or the error it raised (never both)."""

    value: R | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> R:
        """The value, or the item's error raised again."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def run_each(function: Callable[[T], R], items: Iterable[T], *, threads: int) -> list[Outcome[R]]:
    """`function` on every item, on up to `threads` threads, results in input order.

    Each item runs in a copy of the caller's context, so configuration (`using`) and
    tracing reach the worker threads.
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, not {threads!r}")
    work = list(items)

    def one(item: T) -> Outcome[R]:
        try:
            return Outcome(value=function(item))
        except Exception as error:
            return Outcome(error=error)

    if threads == 1 or len(work) <= 1:
        return [one(item) for item in work]
    from concurrent.futures import ThreadPoolExecutor

    with (
        handing_off(sys._getframe(1)),
        ThreadPoolExecutor(max_workers=min(threads, len(work)), thread_name_prefix="lmdsl") as pool,
    ):
        futures = [pool.submit(contextvars.copy_context().run, one, item) for item in work]
        return [future.result() for future in futures]
