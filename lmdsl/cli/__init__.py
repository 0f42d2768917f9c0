"""The `lmdsl` command: `commands` (run, compile, eval, inspect, check) and `check`, the file
runner behind `lmdsl check` (the collect-mode switch the decorators consult stays low, in
`lmdsl.checking`)."""

from __future__ import annotations

from lmdsl.cli.commands import EXIT_FAILED, EXIT_USAGE, main

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "main"]
