"""What one sandboxed run may use, and what a successful one returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmdsl.errors import SandboxInputError

DEFAULT_ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "bisect",
        "cmath",
        "collections",
        "copy",
        "datetime",
        "decimal",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "json",
        "math",
        "operator",
        "random",
        "re",
        "statistics",
        "string",
        "typing",
    }
)

# The system calls the child keeps once the code runs (seccomp allow-list; the rest fail
# with EPERM). Only what a running interpreter needs to compute: no call here takes a path,
# makes a descriptor, or reaches another process.


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. Small limits keep a runaway program cheap.

    `output_bytes` caps both the captured stdout and the JSON text of `result` (UTF-8
    bytes). `allowed_modules` are top-level standard-library modules (with their public
    submodules); third-party packages are not available in the child.
    """

    wall_seconds: float = 5.0
    cpu_seconds: int = 5
    memory_bytes: int = 256 * 2**20
    output_bytes: int = 64 * 1024
    allowed_modules: frozenset[str] = field(default=DEFAULT_ALLOWED_MODULES)

    def __post_init__(self) -> None:
        if not isinstance(self.wall_seconds, (int, float)) or not 0 < self.wall_seconds <= 3600:
            raise SandboxInputError(f"wall_seconds must be in (0, 3600], not {self.wall_seconds!r}")
        if not isinstance(self.cpu_seconds, int) or not 1 <= self.cpu_seconds <= 3600:
            raise SandboxInputError(f"cpu_seconds must be a whole number in [1, 3600], not {self.cpu_seconds!r}")
        if not isinstance(self.memory_bytes, int) or self.memory_bytes < 64 * 2**20:
            raise SandboxInputError(
                f"memory_bytes must be at least 64 MiB (Python needs it), not {self.memory_bytes!r}"
            )
        if not isinstance(self.output_bytes, int) or self.output_bytes < 1:
            raise SandboxInputError(f"output_bytes must be a positive whole number, not {self.output_bytes!r}")
        modules = self.allowed_modules
        if not isinstance(modules, frozenset) or not all(isinstance(m, str) and m.isidentifier() for m in modules):
            raise SandboxInputError(f"allowed_modules must be a frozenset of top-level module names, not {modules!r}")


@dataclass(frozen=True)
class SandboxResult:
    """A successful run: `value` is `result` decoded from JSON (tuples became lists)."""

    value: Any
    stdout: str
    seconds: float
