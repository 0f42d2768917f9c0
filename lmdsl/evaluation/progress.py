"""How an evaluation shows its progress: a rich bar on a terminal, a line every ~10% otherwise.

An optimizer's candidate evaluations show theirs the same way (`shown`), under a title naming
the candidate, while the compile's log is shown (`lmdsl compile` shows it): the lines then go
to that log.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress

    from lmdsl.evaluation.results import EvaluationRow


class Reporter:
    """Silent: the base of the progress displays."""

    def update(self, done: int, score: float, errors: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines(Reporter):
    """A plain line every ~10% (for logs and pipes): to stderr, or to `log` at INFO."""

    def __init__(self, total: int, title: str | None = None, log: logging.Logger | None = None) -> None:
        self.total = total
        self.step = max(1, math.ceil(total / 10))
        self.prefix = f"evaluate {title}" if title else "evaluate"
        self.log = log

    def update(self, done: int, score: float, errors: int) -> None:
        if done % self.step == 0 or done == self.total:
            tail = f", {errors} error(s)" if errors else ""
            text = f"{self.prefix}: {done}/{self.total}, score {score:.1f}{tail}"
            if self.log is not None:
                self.log.info(text)
            else:
                print(text, file=sys.stderr, flush=True)


class _Bar(Reporter):
    """A rich progress bar on stderr."""

    def __init__(self, name: str, total: int, *, force: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=sys.stderr, force_terminal=True if force else None)
        self.progress: Progress = Progress(
            TextColumn("evaluate {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("score {task.fields[score]:.1f}{task.fields[errors]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task(name, total=total, score=0.0, errors="")
        self.progress.start()

    def update(self, done: int, score: float, errors: int) -> None:
        self.progress.update(self.task, completed=done, score=score, errors=f", {errors} error(s)" if errors else "")

    def close(self) -> None:
        self.progress.stop()


def reporter(progress: bool | None, name: str, total: int) -> Reporter:
    if progress is False:
        return Reporter()
    if progress is True:
        return _Bar(name, total, force=True)
    if progress is not None:
        raise TypeError(f"progress must be None, True or False, not {progress!r}")
    if _on_a_terminal():
        return _Bar(name, total, force=False)
    return _Lines(total)


def shown(title: str, total: int, log: logging.Logger) -> Reporter:
    """An optimizer's candidate evaluation: nothing unless `log` shows INFO; then a rich bar on
    a terminal, else a line on `log` every ~10%."""
    if not log.isEnabledFor(logging.INFO):
        return Reporter()
    if _on_a_terminal():
        return _Bar(title, total, force=False)
    return _Lines(total, title, log)


def _on_a_terminal() -> bool:
    stderr = sys.stderr
    isatty = getattr(stderr, "isatty", None)
    return stderr is not None and isatty is not None and bool(isatty())


class State:
    """Running totals shared by the worker threads; decides when to stop."""

    def __init__(self, total: int, max_errors: int | None, reporter: Reporter) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.max_errors = max_errors
        self.reporter = reporter
        self.done = 0
        self.errors = 0
        self.score_sum = 0.0

    def finished(self, row: EvaluationRow) -> None:
        with self.lock:
            self.done += 1
            self.errors += row.error is not None
            self.score_sum += row.score
            if self.max_errors is not None and self.errors > self.max_errors:
                self.stop.set()
            self.reporter.update(self.done, 100.0 * self.score_sum / self.done, self.errors)
