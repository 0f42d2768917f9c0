"""The parent's half of the kernel layer: the seccomp program and the network namespace.

The child loads the program (`child._confine`) just before the code runs; the parent
builds it once per process, because libseccomp is a C library the child cannot import.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import Any

SECCOMP_ALLOWED = (
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
    "read", "readv", "write", "writev", "close",
    "clock_gettime", "clock_getres", "gettimeofday", "time", "clock_nanosleep", "nanosleep",
    "getrusage", "times", "getrandom", "futex", "sched_yield", "getpid", "gettid",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
    "exit", "exit_group",
)  # fmt: skip


@cache
def isolation_prefix() -> tuple[str, ...]:
    """`unshare --net` (a network namespace with no interfaces up) when the system allows it."""
    import shutil
    import subprocess

    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    prefix = (unshare, "--net", "--") if os.geteuid() == 0 else (unshare, "--user", "--net", "--")
    try:
        probe = subprocess.run(
            [*prefix, sys.executable, "-I", "-S", "-c", ""],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={},
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return prefix if probe.returncode == 0 else ()


@cache
def kernel_filter() -> bytes | None:
    """The seccomp-bpf program the child loads before the code runs, or None where unavailable.

    Built once per process by libseccomp (through `pyseccomp`), which gets the architecture
    checks and system-call numbers right; the child only hands the bytes to the kernel.
    """
    import errno
    import importlib
    import tempfile

    try:
        seccomp: Any = importlib.import_module("pyseccomp")  # ctypes over libseccomp.so.2; untyped
        rules = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
        for name in SECCOMP_ALLOWED:
            number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
            if number != -1:  # not a system call on this architecture
                rules.add_rule(seccomp.ALLOW, number)
        with tempfile.TemporaryFile() as file:
            rules.export_bpf(file)
            file.seek(0)
            program: bytes = file.read()
    except (ImportError, OSError, RuntimeError, ValueError, AttributeError, TypeError) as error:
        reason = f"{type(error).__name__}: {error}"
        debug("no kernel confinement in the sandbox: cannot build a seccomp filter (%s)", reason)
        return None
    if not program or len(program) % 8 or len(program) // 8 > 4096:
        debug("no kernel confinement in the sandbox: libseccomp gave an unusable filter (%d bytes)", len(program))
        return None
    return program


_reported: set[str] = set()


def debug(message: str, *args: object) -> None:
    """Log `message` once per process at debug level: how the sandbox degrades is worth one line."""
    import logging

    text = message % args
    if text not in _reported:
        _reported.add(text)
        logging.getLogger("lmdsl.sandbox").debug("%s", text)
