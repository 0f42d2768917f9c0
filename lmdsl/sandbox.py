"""Run model-written Python in a separate, locked-down process and return its `result`.

The code is hostile by assumption. The process boundary and the operating system's
limits are the real wall; inside the child, a restricted namespace and an audit hook
are a second one, so that a trick past one layer still meets the next:

* a fresh interpreter (`python -I -S`) in its own session, with an empty environment,
  a new empty temporary directory as its working directory (deleted afterwards) and,
  where the system allows it, its own network namespace (no network at all);
* resource limits: CPU time, address space, no file writes, few descriptors, no core
  files, and (after dropping root to `nobody`) no new processes; a wall-clock timeout
  that kills the whole process group;
* in the child, before the code runs: only allow-listed (standard-library) modules can
  be imported, as copies without private attributes; builtins without `open`, `eval`,
  `exec`, `compile`, `input`, `globals`...; attribute names that reach interpreter
  internals (`__subclasses__`, `__globals__`, frames...) are refused in the source and
  by `getattr()`;
* an audit hook (`sys.addaudithook`) installed just before the code runs that refuses
  every event but a few harmless ones: no file opens, directory listings, imports of
  new modules, sockets, processes, `ctypes`, signals to other processes, frames,
  run-time compilation (except what namedtuple and typing compile), rlimit changes...;
  and the few `os`/`signal` calls that raise no audit event but reach other processes
  (`pidfd_send_signal`, `setpgid`, `mknod`...) and the import system's back doors
  (`_imp.create_dynamic`...) are removed from the child's modules.

Files are not available at all, not even in the temporary directory: the code computes
from its inputs. Data crosses the process boundary only as JSON, never pickle.
Linux only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from types import ModuleType

from lmdsl.errors import (
    SandboxCodeError,
    SandboxError,
    SandboxInputError,
    SandboxMemoryError,
    SandboxOutputError,
    SandboxTimeout,
    SandboxUnavailableError,
    SandboxViolation,
)

__all__ = ["DEFAULT_ALLOWED_MODULES", "SandboxLimits", "SandboxResult", "run_code"]

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
            raise SandboxInputError(f"memory_bytes must be at least 64 MiB (Python needs it), not {self.memory_bytes!r}")
        if not isinstance(self.output_bytes, int) or self.output_bytes < 1:
            raise SandboxInputError(f"output_bytes must be a positive whole number, not {self.output_bytes!r}")
        modules = self.allowed_modules
        if not isinstance(modules, frozenset) or not all(isinstance(m, str) and m.isidentifier() for m in modules):
            raise SandboxInputError(
                f"allowed_modules must be a frozenset of top-level module names, not {modules!r}"
            )


@dataclass(frozen=True)
class SandboxResult:
    """A successful run: `value` is `result` decoded from JSON (tuples became lists)."""

    value: Any
    stdout: str
    seconds: float


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
    `SandboxTimeout`, `SandboxMemoryError`, `SandboxViolation` (a forbidden operation)
    or `SandboxOutputError` (`result` missing, not JSON or too large). Unusable
    `inputs` raise `SandboxInputError`; a platform without the sandbox raises
    `SandboxUnavailableError`.
    """
    return _run_code(code, inputs, limits)


def _run_code(
    code: str,
    inputs: Mapping[str, Any] | None,
    limits: SandboxLimits,
    *,
    name_checks: bool = True,
    audit_hook: bool = True,
) -> SandboxResult:
    """`run_code`, with switches that turn in-child layers off so tests can probe the others."""
    import shutil
    import tempfile

    if not sys.platform.startswith("linux"):
        raise SandboxUnavailableError(f"the code sandbox needs Linux; this is {sys.platform}")
    if not sys.executable:
        raise SandboxUnavailableError("the code sandbox needs a Python interpreter to start (sys.executable is empty)")
    if not isinstance(limits, SandboxLimits):
        raise SandboxInputError(f"limits must be a SandboxLimits, not {limits!r}")
    request = _encode_request(code, inputs, limits, name_checks=name_checks, audit_hook=audit_hook)
    argv = [*_isolation_prefix(), sys.executable, "-I", "-S", "-B", "-W", "ignore", "-c", _child_source()]
    start = time.monotonic()
    try:
        workdir = tempfile.mkdtemp(prefix="lmdsl-sandbox-")
    except OSError as error:
        raise SandboxUnavailableError(f"cannot create the sandbox's temporary directory: {error}") from None
    try:
        outcome = _execute(argv, request, workdir, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _interpret(outcome, limits, time.monotonic() - start)


# -- the parent's side ---------------------------------------------------------------------


def _encode_request(
    code: str, inputs: Mapping[str, Any] | None, limits: SandboxLimits, *, name_checks: bool, audit_hook: bool
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
    }
    try:
        return json.dumps(message, ensure_ascii=True, allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as error:
        raise SandboxInputError(f"inputs must be JSON-serialisable: {error}") from None


@cache
def _child_source() -> str:
    """The child's program: the marked block of this file, run on its own."""
    try:
        with open(__file__, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise SandboxUnavailableError(f"cannot read the sandbox's child program from {__file__}: {error}") from None
    begin, end = text.find("\n# >>> sandbox child\n"), text.find("\n# <<< sandbox child\n")
    if begin < 0 or end < begin:
        raise SandboxUnavailableError(f"the sandbox's child program is missing from {__file__}")
    return "from __future__ import annotations\n" + text[begin:end] + "\n_child_main()\n"


@cache
def _isolation_prefix() -> tuple[str, ...]:
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


@dataclass(frozen=True)
class _Outcome:
    """What the parent saw of one child: its reply bytes and how it ended."""

    stdout: bytes
    stderr: bytes
    returncode: int | None
    cpu_seconds: float
    timed_out: bool
    overflow: bool


def _execute(argv: list[str], request: bytes, workdir: str, limits: SandboxLimits) -> _Outcome:
    """Start the child, feed it the request, collect its reply under the limits, reap it."""
    import selectors
    import subprocess

    reply_cap = 12 * limits.output_bytes + 256 * 1024
    stderr_cap = 64 * 1024
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
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    err: list[bytes] = []
    in_fd, out_fd, err_fd = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
    sizes = {out_fd: 0, err_fd: 0}
    timed_out = overflow = False
    returncode: int | None = None
    cpu = 0.0
    pending = memoryview(request)
    try:
        with selectors.DefaultSelector() as selector:
            os.set_blocking(in_fd, False)
            selector.register(in_fd, selectors.EVENT_WRITE)
            selector.register(out_fd, selectors.EVENT_READ)
            selector.register(err_fd, selectors.EVENT_READ)
            while selector.get_map() and not overflow:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
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
                        overflow = sizes[fd] > reply_cap
                    elif sizes[fd] <= stderr_cap:
                        err.append(chunk)
        if not timed_out and not overflow:
            timed_out = not _wait_for_exit(proc.pid, deadline)
    finally:
        # Kill the whole group before reaping: the unreaped leader keeps the group id
        # from being reused, so this can only hit the child and anything it started.
        for kill in (os.killpg, os.kill):  # the group, and the child even if it left the group
            try:
                kill(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
        except ChildProcessError:
            returncode = None
        proc.returncode = returncode if returncode is not None else -signal.SIGKILL
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
    return _Outcome(b"".join(out), b"".join(err), returncode, cpu, timed_out, overflow)


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


def _interpret(outcome: _Outcome, limits: SandboxLimits, seconds: float) -> SandboxResult:
    """Turn the child's reply (or its death) into a result or a typed error."""
    if outcome.overflow:
        raise SandboxOutputError("the code wrote far more output than allowed; print less")
    if outcome.timed_out:
        raise SandboxTimeout(
            f"the code did not finish within the {limits.wall_seconds:g} s time limit; "
            "look for an infinite loop or use a faster algorithm",
            limit="wall",
        )
    try:
        reply = json.loads(outcome.stdout)
    except (ValueError, RecursionError):  # a crash mid-reply, or the code wrote to the reply pipe
        reply = None
    if not isinstance(reply, dict):
        _raise_for_death(outcome, limits)
    stdout = reply.get("stdout")
    stdout = stdout if isinstance(stdout, str) else ""
    kind = reply.get("kind")
    text = str(reply.get("message", ""))
    if kind == "ok":
        try:
            value = json.loads(str(reply.get("value")))
        except (ValueError, RecursionError):
            raise SandboxOutputError("`result` could not be read back as JSON", stdout=stdout) from None
        return SandboxResult(value, stdout, seconds)
    if kind == "code":
        line = reply.get("line")
        raise SandboxCodeError(
            text,
            type_name=str(reply.get("type_name", "")),
            detail=str(reply.get("detail", "")),
            traceback=str(reply.get("traceback", "")),
            line=line if isinstance(line, int) else None,
            stdout=stdout,
        )
    if kind == "violation":
        raise SandboxViolation(f"forbidden operation: {text}", stdout=stdout)
    if kind == "memory":
        raise SandboxMemoryError(_memory_message(limits), stdout=stdout)
    if kind == "output":
        raise SandboxOutputError(text, stdout=stdout)
    if kind == "setup":
        raise SandboxInputError(text)
    raise SandboxError(f"the sandbox failed: {text}", stdout=stdout)


def _memory_message(limits: SandboxLimits) -> str:
    return f"the code ran out of memory (limit {limits.memory_bytes // 2**20} MiB); use less memory"


def _raise_for_death(outcome: _Outcome, limits: SandboxLimits) -> NoReturn:
    """The child died without a reply: a CPU limit, memory, or a crash."""
    code = outcome.returncode
    cpu_spent = outcome.cpu_seconds >= limits.cpu_seconds - 0.05
    if code is not None and (code == -signal.SIGXCPU or (code == -signal.SIGKILL and cpu_spent)):
        raise SandboxTimeout(
            f"the code used more than its {limits.cpu_seconds} s of CPU time; "
            "look for an infinite loop or use a faster algorithm",
            limit="cpu",
        )
    tail = outcome.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
    if any(word in "".join(tail) for word in ("MemoryError", "Cannot allocate memory", "out of memory")):
        raise SandboxMemoryError(_memory_message(limits))
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with status {code} without a reply"
    detail = f": {tail[0][:300]}" if tail else ""
    raise SandboxError(f"the code's process {how}{detail}")


# >>> sandbox child
# Everything from here to the closing marker is also the child process's whole program
# (`python -I -S -c <this block>`): it may use only the standard library and names defined
# inside the block, and it imports lazily so that importing lmdsl.sandbox stays cheap.

_CHILD_FILENAME = "<program>"

# Attribute names that lead from ordinary objects to interpreter internals: a class's
# subclasses, a function's globals and code, a builtin's module, frames. Refused in the
# code's source, by getattr() & co., by format-field lookups and by operator.attrgetter.
_DENIED_ATTRIBUTES = frozenset(
    {
        "__base__", "__bases__", "__mro__", "mro", "__subclasses__",
        "__globals__", "__builtins__", "__code__", "__closure__", "__func__", "__self__",
        "__defaults__", "__kwdefaults__", "__dict__", "__getattribute__", "__import__",
        "__loader__", "__spec__", "__traceback__", "__reduce__", "__reduce_ex__",
        "__objclass__", "__wrapped__",
        "tb_frame", "tb_next", "f_back", "f_globals", "f_locals", "f_builtins", "f_code",
        "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code",
    }
)  # fmt: skip

# Builtins the code keeps unchanged; exception classes are added to these.
_SAFE_BUILTINS = (
    "abs all any ascii bin bool bytearray bytes callable chr classmethod complex dict dir "
    "divmod enumerate filter float format frozenset hash hex id int isinstance issubclass "
    "iter len list map max min next object oct ord pow print property range repr reversed "
    "round set slice sorted staticmethod str sum super tuple type zip aiter anext memoryview "
    "Ellipsis NotImplemented __build_class__"
).split()

# Builtins replaced by a function that reports a violation, with the reason.
_REFUSED_BUILTINS = {
    "open": "files are not available; compute from the inputs",
    "input": "there is no input; the inputs are global variables",
    "eval": "eval() is not allowed",
    "exec": "exec() is not allowed",
    "compile": "compile() is not allowed",
    "breakpoint": "breakpoint() is not allowed",
    "globals": "globals() is not allowed",
    "locals": "locals() is not allowed",
    "vars": "vars() is not allowed",
    "help": "help() is not available",
    "exit": "exit() is not allowed; assign the answer to `result`",
    "quit": "quit() is not allowed; assign the answer to `result`",
}

# Audit events the code may cause. Every other event is refused.
_HARMLESS_EVENTS = frozenset(
    {"builtins.id", "exec", "time.sleep", "sys.excepthook", "sys.unraisablehook", "cpython._PySys_ClearAuditHooks"}
)

# Attributes that may not be set or deleted: swapping a function's code is a way to run
# other code inside functions the runner (and its audit hook) relies on.
_PROTECTED_ATTRIBUTES = frozenset({"__code__", "__globals__", "__closure__", "__builtins__"})

# Modules loaded before the code runs so that allowed modules' lazy imports still work
# (the code itself can import only what the limits allow).
_SUPPORT_MODULES = ("heapq", "_strptime", "encodings.latin_1", "encodings.ascii", "encodings.utf_16")


# posix/os and _signal/signal functions that act on other processes, the process group
# or the file system, most of them without raising an audit event (see `_child_seal`).
_SEALED_OS = (
    "kill", "killpg", "pidfd_open", "setsid", "setpgid", "setpgrp", "tcsetpgrp", "mknod", "mkfifo",
    "chroot", "setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid", "setresgid",
    "setgroups", "initgroups", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "setpriority",
)  # fmt: skip
_SEALED_SIGNAL = (
    "pidfd_send_signal", "pthread_kill", "signal", "setitimer", "alarm", "sigwait", "sigtimedwait",
    "sigwaitinfo", "pthread_sigmask", "siginterrupt", "set_wakeup_fd", "raise_signal",
)  # fmt: skip


class _Violation(BaseException):
    """Raised in the child on a forbidden operation. A BaseException: `except Exception` misses it."""


def _child_main() -> None:
    """Read the request from stdin, run the code, write one JSON reply, exit without clean-up."""
    import json
    import os
    import sys

    raw = sys.stdin.buffer.read()
    reply_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)

    def send(message: dict[str, object]) -> NoReturn:
        data = memoryview(json.dumps(message, ensure_ascii=True).encode("ascii"))
        while data:
            data = data[os.write(reply_fd, data) :]
        os._exit(0)

    try:
        _child_run(json.loads(raw), send)
    except MemoryError:
        send({"kind": "memory"})
    except BaseException as error:  # the runner itself failed: report it, never a traceback
        send({"kind": "internal", "message": f"{type(error).__name__}: {_child_text(error, 500)}"})


def _child_text(error: BaseException, limit: int) -> str:
    """`str(error)`, shortened; the code's own `__str__` may misbehave."""
    try:
        text = str(error)
    except BaseException:
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."


def _child_run(request: dict[str, Any], send: Callable[[dict[str, object]], NoReturn]) -> None:
    """Prepare the namespace and the limits, then run the code with the audit hook on."""
    import ast
    import builtins
    import json
    import os
    import resource
    import sys
    import types

    code: str = request["code"]
    allowed: list[str] = request["modules"]
    output_bytes: int = request["output_bytes"]

    # Modules: import the allowed ones now, while imports still work.
    for name in (*allowed, *_SUPPORT_MODULES):
        try:
            __import__(name)
        except ImportError:
            if name in allowed:
                send({"kind": "setup", "message": f"module {name!r} cannot be imported in the sandbox "
                      "(only the standard library is available)"})  # fmt: skip
        except MemoryError:
            send({"kind": "setup", "message": "memory_bytes is too small to start Python in the sandbox"})
    proxies = _child_module_copies(allowed, types.ModuleType)
    future = types.ModuleType("__future__")  # `from __future__ import annotations` is harmless
    for name, value in vars(sys.modules["__future__"] if "__future__" in sys.modules else __import__("__future__")).items():
        if not name.startswith("_"):
            setattr(future, name, value)
    violations: list[str] = []

    def refuse(reason: str) -> NoReturn:
        violations.append(reason)
        raise _Violation(reason)

    def check_name(name: object) -> str:
        if type(name) is not str:
            raise TypeError("attribute name must be a str")
        if name in _DENIED_ATTRIBUTES:
            refuse(f"access to the attribute {name!r} is not allowed")
        return name

    def sandbox_import(
        name: str, globals: object = None, locals: object = None, fromlist: object = (), level: int = 0
    ) -> ModuleType | None:
        if level:
            refuse("relative imports are not available")
        if name == "__future__":
            return future
        if type(fromlist) is list and not fromlist and type(name) is str and name in sys.modules:
            # The C code of a module (datetime's strptime, re's templates) imports this
            # way for the side effect only and takes the module from sys.modules itself.
            return None
        top = str(name).partition(".")[0]
        if top not in allowed:
            refuse(f"importing {name!r} is not allowed; available modules: {', '.join(allowed)}")
        if name not in proxies:
            raise ModuleNotFoundError(f"module {name!r} is not available in the sandbox")
        return proxies[name] if fromlist else proxies[top]

    real_getattr, real_setattr, real_delattr = builtins.getattr, builtins.setattr, builtins.delattr

    def safe_getattr(obj: object, name: str, *default: object) -> object:
        return real_getattr(obj, check_name(name), *default)

    def safe_hasattr(obj: object, name: str) -> bool:
        try:
            real_getattr(obj, check_name(name))
        except AttributeError:
            return False
        return True

    def safe_setattr(obj: object, name: str, value: object) -> None:
        real_setattr(obj, check_name(name), value)

    def safe_delattr(obj: object, name: str) -> None:
        real_delattr(obj, check_name(name))

    def refusal(reason: str) -> Callable[..., NoReturn]:
        def refused(*args: object, **kwargs: object) -> NoReturn:
            refuse(reason)

        return refused

    safe_builtins: dict[str, object] = {name: getattr(builtins, name) for name in _SAFE_BUILTINS}
    for name, value in vars(builtins).items():
        if isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_"):
            safe_builtins[name] = value
    for name, reason in _REFUSED_BUILTINS.items():
        safe_builtins[name] = refusal(reason)
    safe_builtins.update(
        __import__=sandbox_import,
        getattr=safe_getattr,
        hasattr=safe_hasattr,
        setattr=safe_setattr,
        delattr=safe_delattr,
    )
    _child_patch_name_lookups(proxies, check_name)

    # Operating-system limits, then drop root: `nobody` cannot fork with RLIMIT_NPROC=0.
    cpu: int = request["cpu_seconds"]
    memory: int = request["memory_bytes"]
    for limit, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (memory, memory)),
        (resource.RLIMIT_FSIZE, (0, 0)),
        (resource.RLIMIT_NOFILE, (16, 16)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_MEMLOCK, (0, 0)),
    ):
        resource.setrlimit(limit, value)
    if os.geteuid() == 0:
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        except OSError:
            pass  # e.g. a user namespace without uid 65534; the other layers remain
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))

    # Compile, and refuse internal attribute names in the source.
    try:
        tree = ast.parse(code, _CHILD_FILENAME)
        if request["name_checks"]:
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Attribute):
                    names = [node.attr]
                elif isinstance(node, ast.MatchClass):
                    names = list(node.kwd_attrs)
                elif isinstance(node, ast.ImportFrom):
                    names = [alias.name for alias in node.names]
                for name in names:
                    if name in _DENIED_ATTRIBUTES:
                        send({"kind": "violation", "message": f"line {getattr(node, 'lineno', '?')}: "
                              f"the attribute {name!r} is not allowed"})  # fmt: skip
        program = compile(tree, _CHILD_FILENAME, "exec", dont_inherit=True)  # not this file's __future__
    except SyntaxError as error:
        line = error.lineno
        source = (error.text or "").strip()
        where = f" (line {line}: {source[:200]})" if line and source else (f" (line {line})" if line else "")
        detail = str(error.msg)
        send({"kind": "code", "type_name": type(error).__name__, "detail": detail, "line": line,
              "message": f"{type(error).__name__}: {detail}{where}", "traceback": ""})  # fmt: skip
    except (ValueError, RecursionError) as error:  # null bytes, nesting too deep
        detail = _child_text(error, 300)
        send({"kind": "code", "type_name": type(error).__name__, "detail": detail, "line": None,
              "message": f"{type(error).__name__}: {detail}", "traceback": ""})  # fmt: skip

    _child_seal(proxies)
    capture = _ChildCapture(output_bytes)
    sys.stdout = sys.stderr = capture
    namespace: dict[str, object] = {"__builtins__": safe_builtins, "__name__": "__main__", "__doc__": None}
    namespace.update(request["inputs"])
    frames_ok = [False]
    if request["audit_hook"]:
        sys.addaudithook(_child_audit_hook(frames_ok, refuse))

    reserve: bytearray | None = bytearray(1 << 20)  # room to report a MemoryError
    failure: BaseException | None = None
    try:
        exec(program, namespace)
    except _Violation:
        pass  # recorded by the hook or reported below
    except MemoryError:
        reserve = None
        namespace.clear()
        send({"kind": "memory", "stdout": capture.text()})
    except BaseException as error:
        failure = error
    del reserve
    if violations:
        send({"kind": "violation", "message": violations[0], "stdout": capture.text()})
    if failure is not None:
        if isinstance(failure, _Violation):
            send({"kind": "violation", "message": _child_text(failure, 500), "stdout": capture.text()})
        frames_ok[0] = True
        try:
            entries = _child_traceback(failure)
        finally:
            frames_ok[0] = False
        send(_child_describe(failure, entries, code, capture.text()))
    if "result" not in namespace:
        send({"kind": "output", "stdout": capture.text(),
              "message": "the code did not set `result`; assign the answer to `result`"})  # fmt: skip
    try:
        value = json.dumps(namespace["result"], ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as error:
        reason = _child_text(error, 200)
        if "Out of range float" in reason:
            reason = "it contains NaN or infinity, which JSON cannot represent"
        elif "Circular" in reason:
            reason = "it refers to itself"
        elif "integer string conversion" in reason:
            reason = "it contains an integer with more than 4300 digits"
        send({"kind": "output", "stdout": capture.text(), "message": f"`result` is not JSON-serialisable: {reason}"})
    except RecursionError:
        send({"kind": "output", "stdout": capture.text(), "message": "`result` is nested too deeply"})
    except TypeError as error:
        send({"kind": "output", "stdout": capture.text(),
              "message": f"`result` is not JSON-serialisable ({_child_text(error, 200)}); "
              "use str, int, float, bool, None, lists and dicts with str keys"})  # fmt: skip
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > output_bytes:
        send({"kind": "output", "stdout": capture.text(),
              "message": f"`result` is too large ({size} bytes of JSON; the limit is {output_bytes})"})  # fmt: skip
    send({"kind": "ok", "value": value, "stdout": capture.text()})


class _ChildCapture:
    """sys.stdout and sys.stderr of the code: keeps the first `limit` bytes, drops the rest."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, text: str) -> int:
        if type(text) is not str:
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not self.truncated:
            room = self.limit - self.size
            data = text[:room].encode("utf-8", "surrogatepass")  # never more chars than bytes
            if len(text) > room or len(data) > room:
                self.parts.append(data[:room].decode("utf-8", "ignore"))
                self.size = self.limit
                self.truncated = True
            else:
                self.parts.append(text)
                self.size += len(data)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def text(self) -> str:
        text = "".join(self.parts)
        return text + f"\n[output truncated after {self.limit} bytes]\n" if self.truncated else text


def _child_module_copies(allowed: list[str], module_type: type[ModuleType]) -> dict[str, ModuleType]:
    """Copies of the allowed modules (and their public submodules) without private names.

    A copy holds the public attributes only; attributes that are other modules are kept
    only when those are allowed too (as their copies). `random._os` and the like vanish.
    """
    import sys

    names = [
        name
        for name in list(sys.modules)
        if name.partition(".")[0] in allowed and not any(part.startswith("_") for part in name.split("."))
    ]
    copies = {name: module_type(name, getattr(sys.modules[name], "__doc__", None)) for name in names}
    for name in names:
        module = sys.modules[name]
        for attribute, value in list(vars(module).items()):
            if attribute.startswith("_"):
                continue
            if isinstance(value, module_type):
                if getattr(value, "__name__", None) in copies:
                    setattr(copies[name], attribute, copies[value.__name__])
                continue
            setattr(copies[name], attribute, value)
        public = getattr(module, "__all__", None)
        if isinstance(public, (list, tuple)):
            setattr(copies[name], "__all__", [n for n in public if isinstance(n, str) and hasattr(copies[name], n)])
    return copies


def _child_patch_name_lookups(copies: dict[str, ModuleType], check_name: Callable[[object], str]) -> None:
    """Close the library routes to getattr-by-string: attrgetter, methodcaller, Formatter."""
    import operator
    import string

    real_attrgetter, real_methodcaller = operator.attrgetter, operator.methodcaller

    def attrgetter(*names: str) -> Callable[[object], object]:
        for name in names:
            if type(name) is not str:
                raise TypeError("attribute name must be a str")
            for part in name.split("."):
                check_name(part)
        getter = real_attrgetter(*names)
        return lambda obj: getter(obj)

    def methodcaller(name: str, *args: object, **kwargs: object) -> Callable[[object], object]:
        caller = real_methodcaller(check_name(name), *args, **kwargs)
        return lambda obj: caller(obj)

    if "operator" in copies:
        setattr(copies["operator"], "attrgetter", attrgetter)
        setattr(copies["operator"], "methodcaller", methodcaller)
    real_get_field = string.Formatter.get_field

    def get_field(self: string.Formatter, field_name: str, args: Any, kwargs: Any) -> Any:
        if type(field_name) is not str:
            raise TypeError("field name must be a str")
        for part in field_name.replace("[", ".").replace("]", ".").split("."):
            check_name(part)  # item keys too: stricter than needed, never looser
        return real_get_field(self, field_name, args, kwargs)

    string.Formatter.get_field = get_field  # type: ignore[method-assign]


def _child_seal(copies: dict[str, ModuleType]) -> None:
    """Remove primitives that raise no audit event but reach past the process.

    The loaders that bypass the import system (and its audit event), and the calls that
    signal or re-group other processes or create device nodes. Done after the runner's
    own set-up, which needs some of them, and before the code runs; from the code's
    copies of those modules too.
    """
    import sys

    import _imp

    unaudited = {
        _imp: ("create_dynamic", "exec_dynamic", "create_builtin", "exec_builtin", "get_frozen_object", "init_frozen"),
        sys.modules.get("posix"): _SEALED_OS,
        sys.modules.get("os"): _SEALED_OS,
        sys.modules.get("_signal"): _SEALED_SIGNAL,
        sys.modules.get("signal"): _SEALED_SIGNAL,
        copies.get("os"): _SEALED_OS,
        copies.get("posix"): _SEALED_OS,
        copies.get("signal"): _SEALED_SIGNAL,
    }
    for module, names in unaudited.items():
        for name in names:
            if module is not None and hasattr(module, name):
                delattr(module, name)


def _child_audit_hook(
    frames_ok: list[bool], refuse: Callable[[str], NoReturn]
) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook: every event but a few harmless ones is refused and recorded.

    Everything it consults is bound here, in its closure, so that code which reaches
    the runner's globals or patches builtins cannot change what the hook decides.
    """
    harmless, protected, short, is_template, is_hint = (
        _HARMLESS_EVENTS, _PROTECTED_ATTRIBUTES, _child_short, _child_is_namedtuple_source, _child_is_type_hint
    )
    exact_str, type_of, size = str, type, len

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if type_of(event) is not exact_str:
            event = "?"
        if event in harmless:
            return
        first = args[0] if size(args) > 0 else None
        second = args[1] if size(args) > 1 else None
        if event == "sys._getframe":  # namedtuple and typing ask, and cope with ValueError
            raise ValueError("frames are not available in the sandbox")
        if event in ("object.__setattr__", "object.__delattr__"):
            if type_of(second) is exact_str and second not in protected:
                return
            reason = f"changing the attribute {short(second)} is not allowed"
        elif event == "object.__getattr__":
            if frames_ok[0] and type_of(second) is exact_str and second in ("tb_frame", "f_code"):
                return
            reason = f"access to the attribute {short(second)} is not allowed"
        elif event == "compile":
            if type_of(second) is exact_str and second == "<string>" and (is_template(first) or is_hint(first)):
                return
            reason = "compiling code at run time (eval, exec, compile) is not allowed"
        elif event == "open":
            reason = f"files are not available (tried to open {short(first)})"
        elif event == "import":
            reason = f"importing {short(first)} is not allowed"
        elif event.startswith("socket."):
            reason = "network access is not allowed"
        elif event.startswith(("subprocess.", "os.system", "os.exec", "os.fork", "os.posix_spawn", "os.spawn")):
            reason = "starting processes is not allowed"
        elif event.startswith("ctypes."):
            reason = "ctypes is not allowed"
        else:
            reason = f"the operation {event!r} is not allowed in the sandbox"
        refuse(reason)

    return hook


def _child_short(value: object) -> str:
    """A short repr of an audit argument, without calling the code's own methods."""
    if type(value) in (str, bytes, int):
        text = repr(value)
        return text if len(text) <= 120 else text[:120] + "..."
    return f"<{type(value).__name__}>"


def _child_is_namedtuple_source(source: object) -> bool:
    """True for the one-line `lambda` that collections.namedtuple compiles: harmless."""
    if type(source) is bytes:
        source = source.decode("utf-8", "replace")
    if type(source) is not str or not source.startswith("lambda _cls, "):
        return False
    head, sep, tail = source[len("lambda _cls, ") :].partition(": _tuple_new(_cls, (")
    if not sep or tail != head + "))":
        return False
    names = head[:-1] if head.endswith(",") else head
    return all(part.isidentifier() for part in names.split(", ")) if names else True


def _child_is_type_hint(source: object) -> bool:
    """True for a string annotation such as `dict[str, list[int]] | None`, which typing compiles.

    Names, dots, brackets, commas and `|` only, and no name that starts with `_` or is
    refused anyway: compiled, such a string can only look up public names.
    """
    if type(source) is bytes:
        source = source.decode("utf-8", "replace")
    if type(source) is not str or not 0 < len(source) <= 300:
        return False
    if any(not (char.isascii() and (char.isalnum() or char in "_.[], |")) for char in source):
        return False
    tokens = source.replace("[", " ").replace("]", " ").replace(",", " ").replace("|", " ").replace(".", " ").split()
    return all(not token.startswith("_") and token not in _DENIED_ATTRIBUTES for token in tokens)


def _child_traceback(error: BaseException) -> list[tuple[int, str]]:
    """(line, function) for each frame of the code itself, outermost first."""
    entries: list[tuple[int, str]] = []
    tb = vars(BaseException)["__traceback__"].__get__(error)  # not a `__traceback__` the code overrode
    while tb is not None:
        frame_code = tb.tb_frame.f_code
        if frame_code.co_filename == _CHILD_FILENAME:
            entries.append((tb.tb_lineno, frame_code.co_name))
        tb = tb.tb_next
    return entries


def _child_describe(error: BaseException, entries: list[tuple[int, str]], code: str, stdout: str) -> dict[str, object]:
    """The reply for an exception the code raised: type, message and the code's lines."""
    lines = code.splitlines()
    shown: list[str] = []
    for index, (number, function) in enumerate(entries):
        if len(entries) > 6 and 2 <= index < len(entries) - 3:
            if index == 2:
                shown.append(f"  ... {len(entries) - 5} more ...")
            continue
        source = lines[number - 1].strip()[:200] if 0 < number <= len(lines) else ""
        shown.append(f"  line {number}, in {function}: {source}")
    type_name = type(error).__name__
    detail = _child_text(error, 1000)
    traceback = "\n".join(shown)
    message = f"{type_name}: {detail}" if detail else type_name
    if traceback:
        message += "\nTraceback (the code's lines only):\n" + traceback
    return {
        "kind": "code",
        "type_name": type_name,
        "detail": detail,
        "traceback": traceback,
        "line": entries[-1][0] if entries else None,
        "message": message,
        "stdout": stdout,
    }


# <<< sandbox child
