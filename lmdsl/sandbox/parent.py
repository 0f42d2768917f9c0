"""The parent's side: start the child, hand it the request, collect what it says under the limits."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

from lmdsl.errors import SandboxError, SandboxInputError, SandboxUnavailableError
from lmdsl.sandbox.confinement import isolation_prefix, kernel_filter
from lmdsl.sandbox.limits import SandboxLimits, SandboxResult
from lmdsl.sandbox.protocol import SETUP_MESSAGES, Outcome, decode, interpret


def run_code(
    code: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    limits: SandboxLimits = SandboxLimits(),
) -> SandboxResult:
    """Run `code` in the sandbox and return the value it assigned to the global `result`.

    `inputs` (JSON-serialisable values) become global variables of the code. The code
    must assign its answer to a global named `result`; the value must be
    JSON-serialisable. Every failure of the code is a `SandboxError` subclass whose
    message can be shown to the model: `SandboxCodeError` (syntax error or exception),
    `SandboxTimeout`, `SandboxMemoryError`, `SandboxViolation` (a forbidden operation),
    `SandboxOutputError` (`result` missing, not JSON or too large) or `SandboxCrash` (the
    process died of a signal). Unusable `inputs` or `limits` raise `SandboxInputError`; a
    platform without the sandbox raises `SandboxUnavailableError`.
    """
    return _run_code(code, inputs, limits)


def _run_code(
    code: str,
    inputs: Mapping[str, Any] | None,
    limits: SandboxLimits,
    *,
    name_checks: bool = True,
    audit_hook: bool = True,
    kernel: bool = True,
    probe: list[Outcome] | None = None,
) -> SandboxResult:
    """`run_code`, with switches that turn layers off so tests can probe the others.

    `probe`, when given, receives the raw outcome (for `_kernel_confinement`).
    """
    import shutil
    import tempfile

    if not sys.platform.startswith("linux"):
        raise SandboxUnavailableError(f"the code sandbox needs Linux; this is {sys.platform}")
    if not sys.executable:
        raise SandboxUnavailableError("the code sandbox needs a Python interpreter to start (sys.executable is empty)")
    if not isinstance(limits, SandboxLimits):
        raise SandboxInputError(f"limits must be a SandboxLimits, not {limits!r}")
    program = kernel_filter() if kernel else None
    request = _encode_request(code, inputs, limits, name_checks=name_checks, audit_hook=audit_hook, seccomp=program)
    argv = _child_argv()
    start = time.monotonic()
    try:
        workdir = tempfile.mkdtemp(prefix="lmdsl-sandbox-")
    except OSError as error:
        raise SandboxUnavailableError(f"cannot create the sandbox's temporary directory: {error}") from None
    try:
        outcome = _execute(argv, request, workdir, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if probe is not None:
        probe.append(outcome)
    return interpret(outcome, limits, time.monotonic() - start)


@cache
def _kernel_confinement() -> str:
    """Why the kernel layer is not active on this machine, or "" when it is (tests skip on it).

    Asks a real child: the filter may build and still be refused by the kernel.
    """
    if kernel_filter() is None:
        return "libseccomp (through pyseccomp) cannot build a seccomp filter here"
    seen: list[Outcome] = []
    try:
        _run_code("result = 1", None, SandboxLimits(wall_seconds=30.0), probe=seen)
    except (SandboxError, SandboxUnavailableError) as error:
        return f"the sandbox does not run here: {error}"
    ready = decode(seen[0].stdout.partition(b"\n")[0], SETUP_MESSAGES)
    return "" if ready["confined"] else str(ready["note"] or "the child did not load the filter")


# -- the parent's side ---------------------------------------------------------------------


def _encode_request(
    code: str,
    inputs: Mapping[str, Any] | None,
    limits: SandboxLimits,
    *,
    name_checks: bool,
    audit_hook: bool,
    seccomp: bytes | None = None,
) -> bytes:
    """The JSON message the child reads from stdin; refuses inputs the child could not take."""
    import keyword

    if not isinstance(code, str):
        raise SandboxInputError(f"code must be a str, not {type(code).__name__}")
    values = dict(inputs or {})
    for name in values:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise SandboxInputError(f"input name {name!r} is not a Python identifier")
        if name == "result" or name.startswith("__"):
            raise SandboxInputError(f"input name {name!r} is reserved")
    message = {
        "code": code,
        "inputs": values,
        "modules": sorted(limits.allowed_modules),
        "cpu_seconds": limits.cpu_seconds,
        "memory_bytes": limits.memory_bytes,
        "output_bytes": limits.output_bytes,
        "name_checks": name_checks,
        "audit_hook": audit_hook,
        "seccomp": seccomp.hex() if seccomp is not None else None,
    }
    try:
        return json.dumps(message, ensure_ascii=True, allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as error:
        raise SandboxInputError(f"inputs must be JSON-serialisable: {error}") from None


_CHILD_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")


def _child_argv() -> list[str]:
    """How the child starts: a fresh interpreter, isolated from the environment and site-packages, running child.py."""
    if not os.path.isfile(_CHILD_PROGRAM):
        raise SandboxUnavailableError(f"the sandbox's child program is missing: {_CHILD_PROGRAM}")
    return [*isolation_prefix(), sys.executable, "-I", "-S", "-B", "-W", "ignore", _CHILD_PROGRAM]


def _execute(argv: list[str], request: bytes, workdir: str, limits: SandboxLimits) -> Outcome:
    """Start the child, feed it the request, collect its messages under the limits, reap it."""
    import subprocess

    deadline = time.monotonic() + limits.wall_seconds
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            cwd=workdir,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as error:
        raise SandboxUnavailableError(f"cannot start the sandbox's interpreter: {error}") from None
    try:
        stdout, stderr, timed_out, overflow = _exchange(proc, request, deadline, 12 * limits.output_bytes + 256 * 1024)
        if not timed_out and not overflow:
            timed_out = not _wait_for_exit(proc.pid, deadline)
    finally:
        returncode, cpu = _kill_and_reap(proc)
    return Outcome(stdout, stderr, returncode, cpu, timed_out, overflow)


_STDERR_CAP = 64 * 1024  # bytes of the child's stderr kept (the tail explains a crash)


def _exchange(
    proc: subprocess.Popen[bytes], request: bytes, deadline: float, reply_cap: int
) -> tuple[bytes, bytes, bool, bool]:
    """Write the request and read stdout and stderr until both close, the deadline passes
    (timed out) or stdout passes `reply_cap` (overflow)."""
    import selectors

    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    err: list[bytes] = []
    in_fd, out_fd, err_fd = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
    sizes = {out_fd: 0, err_fd: 0}
    pending = memoryview(request)
    with selectors.DefaultSelector() as selector:
        os.set_blocking(in_fd, False)
        selector.register(in_fd, selectors.EVENT_WRITE)
        selector.register(out_fd, selectors.EVENT_READ)
        selector.register(err_fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b"".join(out), b"".join(err), True, False
            for key, _ in selector.select(remaining):
                fd = key.fd
                if fd == in_fd:
                    try:
                        pending = pending[os.write(fd, pending[:65536]) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # the child is gone or closed stdin early
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                    continue
                sizes[fd] += len(chunk)
                if fd == out_fd:
                    out.append(chunk)
                    if sizes[fd] > reply_cap:
                        return b"".join(out), b"".join(err), False, True
                elif sizes[fd] <= _STDERR_CAP:
                    err.append(chunk)
    return b"".join(out), b"".join(err), False, False


def _kill_and_reap(proc: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """Kill the child's group and reap the child: its exit code (None if already reaped) and CPU seconds."""
    # Kill the whole group before reaping: the unreaped leader keeps the group id
    # from being reused, so this can only hit the child and anything it started.
    for kill in (os.killpg, os.kill):  # the group, and the child even if it left the group
        try:
            kill(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    returncode: int | None = None
    cpu = 0.0
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    except ChildProcessError:
        returncode = None
    proc.returncode = returncode if returncode is not None else -signal.SIGKILL
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    return returncode, cpu


def _wait_for_exit(pid: int, deadline: float) -> bool:
    """Wait (without reaping) until the child exits; False if the deadline passes first."""
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(0.005, remaining))


# The messages the child may send, by kind: required and optional fields with their exact
