"""The sandbox child: the whole program of the process that runs the model's code.

Run as `python -I -S -B child.py` (see `parent._child_argv`), never imported for its
functions by the parent: it may use only the standard library, and it imports lazily so
the interpreter holds as little as possible when the code starts. It reads one JSON
request on stdin and writes JSON lines on stdout (`protocol` reads them); its layers
(allow-listed module copies, the name checks, the audit hook and the seccomp program it
loads) are described in the package's docstring.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not loaded into the child
if TYPE_CHECKING:
    import ast
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any, NoReturn

_PROGRAM_FILENAME = "<program>"

# Attribute names that lead from ordinary objects to interpreter internals: a class's
# subclasses and namespace, a function's globals and code, a builtin's module, frames, and
# the generic readers of them. Refused wherever the code spells an attribute name.
_DENIED_ATTRIBUTES = frozenset(
    {
        "__base__", "__bases__", "__mro__", "mro", "__subclasses__",
        "__globals__", "__builtins__", "__code__", "__closure__", "__func__", "__self__",
        "__defaults__", "__kwdefaults__", "__dict__", "__getattribute__", "__getattr__", "__import__",
        "__loader__", "__spec__", "__traceback__", "__reduce__", "__reduce_ex__", "__getstate__",
        "__objclass__", "__wrapped__",
        "tb_frame", "tb_next", "f_back", "f_globals", "f_locals", "f_builtins", "f_code",
        "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code",
    }
)  # fmt: skip

# Names the code may not use or bind (variables, parameters, functions, classes, keyword
# arguments): a class of its own with a `__dict__` or `__globals__` could be handed to
# library code that reads those names. Defining `__getattr__` or the pickling hooks is
# ordinary Python and harmless, and `__import__` is the sandbox's own importer; only
# reading them as attributes is refused.
_DENIED_NAMES = frozenset(name for name in _DENIED_ATTRIBUTES if name.startswith("__")) - {
    "__getattr__",
    "__getstate__",
    "__reduce__",
    "__reduce_ex__",
    "__import__",
}

# str methods that look up the attribute names written in their format string: they reach
# the code only through a wrapper that checks those names first.
_FORMAT_METHODS = frozenset({"format", "format_map"})

# Globals of the code's namespace that the rewritten program uses; not identifiers, so the
# code cannot name, bind or shadow them.
_ATTR_HELPER = "<sandbox attr>"
_CLASSES_HELPER = "<sandbox classes>"

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
# or the file system, most of them without raising an audit event (see `_seal`).
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


def main() -> None:
    """Read the request from stdin, run the code, write its messages, exit without clean-up.

    Messages are JSON lines on the original stdout: the first ("ready", or why set-up
    failed) before the code runs, the reply after it.
    """
    import json
    import os
    import sys

    raw = sys.stdin.buffer.read()
    reply_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    encode = _encoder()

    def post(message: dict[str, object]) -> None:
        data = memoryview(encode(message))
        while data:
            data = data[os.write(reply_fd, data) :]

    def send(message: dict[str, object]) -> NoReturn:
        post(message)
        os._exit(0)

    try:
        _run(json.loads(raw), send, post)
    except MemoryError:
        send({"kind": "memory"})
    except BaseException as error:  # the runner itself failed: report it, never a traceback
        send({"kind": "internal", "message": f"{type(error).__name__}: {_text(error, 500)}"})


def _encoder() -> Callable[[dict[str, object]], bytes]:
    """The runner's writer for its messages: one line of JSON, objects of str, int, bool and None.

    Bound now to json's C string encoder, so that code which patches json's classes cannot
    change what the runner writes (the parent checks every reply anyway).
    """
    from json.encoder import encode_basestring_ascii as quote

    exact_str, exact_int, int_text, str_copy = str, int, int.__repr__, str.__str__

    def encode(message: dict[str, object]) -> bytes:
        parts: list[str] = []
        for key, value in message.items():
            if value is None or value is True or value is False:
                text = {None: "null", True: "true", False: "false"}[value]
            elif type(value) is exact_int:
                text = int_text(value)
            elif isinstance(value, exact_str):
                text = quote(value if type(value) is exact_str else str_copy(value))
            else:
                text = quote("<unprintable>")
            parts.append(quote(key) + ":" + text)
        return ("{" + ",".join(parts) + "}\n").encode("ascii")

    return encode


def _text(error: BaseException, limit: int) -> str:
    """`str(error)`, shortened; the code's own `__str__` may misbehave."""
    try:
        text = str.__str__(str(error))
    except BaseException:
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."


def _run(
    request: dict[str, Any], send: Callable[[dict[str, object]], NoReturn], post: Callable[[dict[str, object]], None]
) -> None:
    """Prepare the namespace, the limits and the confinement, then run the code with the audit hook on."""
    import ast
    import builtins
    import json
    import os
    import resource
    import sys
    import time
    import types

    code: str = request["code"]
    allowed: list[str] = request["modules"]
    output_bytes: int = request["output_bytes"]
    seccomp: str | None = request["seccomp"]

    # Modules: import the allowed ones now, while imports still work.
    for name in (*allowed, *_SUPPORT_MODULES, *(("ctypes",) if seccomp is not None else ())):
        try:
            __import__(name)
        except ImportError:
            if name in allowed:
                send({"kind": "setup", "message": f"module {name!r} cannot be imported in the sandbox "
                      "(only the standard library is available)"})  # fmt: skip
        except MemoryError:
            send({"kind": "setup", "message": "memory_bytes is too small to start Python in the sandbox"})
    proxies = _module_copies(allowed, types.ModuleType)
    future = types.ModuleType("__future__")  # `from __future__ import annotations` is harmless
    for name, value in vars(
        sys.modules["__future__"] if "__future__" in sys.modules else __import__("__future__")
    ).items():
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

    def check_pattern_name(name: object) -> str:
        checked = check_name(name)
        if checked in _FORMAT_METHODS:
            refuse(f"matching the attribute {checked!r} by position is not allowed")
        return checked

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
    guard_format = _format_guard(check_name)

    def safe_getattr(obj: object, name: str, *default: object) -> object:
        return guard_format(real_getattr(obj, check_name(name), *default))

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

    def attribute(obj: object, name: str) -> object:  # `obj.format` in the rewritten program
        return guard_format(real_getattr(obj, name))

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
    program_module = types.ModuleType("__main__")  # typing finds the code's classes' namespace here
    namespace = vars(program_module)
    _patch_name_lookups(proxies, check_name, guard_format)
    _patch_typing(refuse, safe_builtins, namespace, globals())

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
    time.localtime()  # the C library reads the time zone now, while files can still be opened

    # Compile: refuse internal names in the source, route dynamic names through the checks.
    try:
        tree = ast.parse(code, _PROGRAM_FILENAME)
        if request["name_checks"]:
            problem = _denied_name(tree)
            if problem is not None:
                send({"kind": "violation", "message": problem})
            tree = _rewrite(tree)
        program = compile(tree, _PROGRAM_FILENAME, "exec", dont_inherit=True)  # not this file's __future__
    except SyntaxError as error:
        line = error.lineno
        source = (error.text or "").strip()
        where = f" (line {line}: {source[:200]})" if line and source else (f" (line {line})" if line else "")
        detail = str(error.msg)
        send({"kind": "code", "type_name": type(error).__name__, "detail": detail, "line": line,
              "message": f"{type(error).__name__}: {detail}{where}", "traceback": ""})  # fmt: skip
    except (ValueError, RecursionError) as error:  # null bytes, nesting too deep
        detail = _text(error, 300)
        send({"kind": "code", "type_name": type(error).__name__, "detail": detail, "line": None,
              "message": f"{type(error).__name__}: {detail}", "traceback": ""})  # fmt: skip

    _seal(proxies)
    note = _confine(seccomp) if seccomp is not None else ""  # why a requested filter is not loaded
    post({"kind": "ready", "confined": seccomp is not None and not note, "note": note})  # the code can write next

    capture = _Capture(output_bytes)
    sys.stdout = sys.stderr = capture
    namespace.update({"__builtins__": safe_builtins, "__doc__": None})
    namespace.update(request["inputs"])
    namespace[_ATTR_HELPER] = attribute
    namespace[_CLASSES_HELPER] = _match_classes(check_pattern_name)
    sys.modules["__main__"] = program_module
    frames_ok = [False]
    if request["audit_hook"]:
        sys.addaudithook(_audit_hook(frames_ok, refuse))

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
            send({"kind": "violation", "message": _text(failure, 500), "stdout": capture.text()})
        frames_ok[0] = True
        try:
            entries = _traceback(failure)
        finally:
            frames_ok[0] = False
        send(_describe(failure, entries, code, capture.text()))
    if "result" not in namespace:
        send({"kind": "output", "stdout": capture.text(),
              "message": "the code did not set `result`; assign the answer to `result`"})  # fmt: skip
    try:
        value = json.dumps(namespace["result"], ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as error:
        reason = _text(error, 200)
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
              "message": f"`result` is not JSON-serialisable ({_text(error, 200)}); "
              "use str, int, float, bool, None, lists and dicts with str keys"})  # fmt: skip
    if type(value) is not str:
        send({"kind": "output", "stdout": capture.text(), "message": "`result` could not be written as JSON"})
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > output_bytes:
        send({"kind": "output", "stdout": capture.text(),
              "message": f"`result` is too large ({size} bytes of JSON; the limit is {output_bytes})"})  # fmt: skip
    send({"kind": "ok", "value": value, "stdout": capture.text()})


class _Capture:
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


def _module_copies(allowed: list[str], module_type: type[ModuleType]) -> dict[str, ModuleType]:
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


def _format_guard(check_name: Callable[[object], str]) -> Callable[[object], object]:
    """A filter for attribute values: `str.format` and `str.format_map` come out checking their fields.

    Those methods look up the attribute names written in the format string (`{0.__globals__}`),
    which can be built at run time; the wrapper checks each such name just before the call.
    """
    parser: Any = __import__("_string")  # the C parser behind str.format (no type stubs)

    real_format, real_format_map = str.format, str.format_map
    builtin_method = type("".format)

    def check(template: object, depth: int = 0) -> None:
        if not isinstance(template, str) or depth > 3:
            return  # not a str: the real method raises; deeper nesting: it refuses the recursion
        fields = parser.formatter_parser(template)
        try:
            for _, field_name, spec, _ in fields:  # lazily, like the real method: it looks up as it goes
                if field_name is not None:
                    _, rest = parser.formatter_field_name_split(field_name)
                    for is_attribute, key in rest:
                        if is_attribute:
                            check_name(key)
                if spec:
                    check(spec, depth + 1)
        except ValueError:
            return  # malformed from here on: the real method raises at the same place

    def unbound(real: Callable[..., str]) -> Callable[..., str]:
        def method(self: object, /, *args: object, **kwargs: object) -> str:
            check(self)
            return real(self, *args, **kwargs)

        return method

    checked_format, checked_format_map = unbound(real_format), unbound(real_format_map)

    def bound(real: Callable[..., str], template: str) -> Callable[..., str]:
        def method(*args: object, **kwargs: object) -> str:
            check(template)
            return real(*args, **kwargs)

        return method

    def guard(value: object) -> object:
        if value is real_format:
            return checked_format
        if value is real_format_map:
            return checked_format_map
        if type(value) is builtin_method:
            owner = getattr(value, "__self__", None)
            if isinstance(owner, str) and getattr(value, "__name__", None) in _FORMAT_METHODS:
                return bound(value, owner)
        return value

    return guard


def _match_classes(check_name: Callable[[object], str]) -> Callable[..., object]:
    """`<sandbox classes>`: the classes of a match statement's class patterns, for the match.

    A class pattern with positional sub-patterns reads the attributes that the class's
    `__match_args__` name: strings computed at run time, which a metaclass may even answer
    differently each time it is asked. So the pattern gets a stand-in class. The match
    calls the stand-in's isinstance() first; when the real class says yes, that call reads
    the real `__match_args__` (once, where Python would), checks every name and freezes
    them in the stand-in, from which the match then takes them with no code in between.
    Builtins that match themselves (`int(x)`) keep that behaviour.
    """
    real_type = type
    flags_of = type.__dict__["__flags__"].__get__
    name_of = type.__dict__["__name__"].__get__
    base_of = type.__dict__["__base__"].__get__
    set_attribute, delete_attribute = type.__setattr__, type.__delattr__
    is_class, matches_self = 1 << 31, 1 << 22  # Py_TPFLAGS_TYPE_SUBCLASS, _Py_TPFLAGS_MATCH_SELF
    self_matching = (bool, bytearray, bytes, dict, float, frozenset, int, list, set, str, tuple)
    missing = object()
    targets: dict[int, Any] = {}
    made: dict[int, tuple[object, type]] = {}  # holds each class, so that its id is not reused

    class StandIn(type):
        def __instancecheck__(cls, instance: object) -> bool:
            target = targets[id(cls)]
            if not isinstance(instance, target):
                return False
            args = getattr(target, "__match_args__", missing)
            if type(args) is tuple:
                for name in args:
                    if type(name) is str:  # others make the match raise TypeError when reached
                        check_name(name)
            if args is not missing:
                set_attribute(cls, "__match_args__", args)
            elif "__match_args__" in cls.__dict__:
                delete_attribute(cls, "__match_args__")
            return True

    def stand_in(cls: Any) -> object:
        if not flags_of(real_type(cls)) & is_class:
            return cls  # not a class: the match raises TypeError before any lookup
        if any(cls is builtin for builtin in self_matching):
            return cls  # no metaclass and no namespace the code can change
        if id(cls) in made:
            return made[id(cls)][1]
        bases: tuple[Any, ...] = ()
        if flags_of(cls) & matches_self:  # a subclass of a builtin that matches itself
            solid: Any = cls
            while solid is not None and not any(solid is builtin for builtin in self_matching):
                solid = base_of(solid)
            bases = (solid,) if solid is not None else ()
        proxy = StandIn(name_of(cls), bases, {})
        targets[id(proxy)] = cls
        made[id(cls)] = (cls, proxy)
        return proxy

    class Classes:
        __slots__ = ("lazy", "sources")

        def __init__(self, lazy: bool, sources: tuple[Any, ...]) -> None:
            self.lazy = lazy
            self.sources = sources

        def __getattr__(self, key: str) -> object:
            source = self.sources[int(key[1:])]
            return stand_in(source() if self.lazy else source)

    def classes(lazy: bool, *sources: Any) -> Classes:
        return Classes(lazy, sources)

    return classes


def _patch_name_lookups(
    copies: dict[str, ModuleType], check_name: Callable[[object], str], guard: Callable[[object], object]
) -> None:
    """Close the library routes to getattr-by-string: attrgetter, methodcaller, Formatter, update_wrapper.

    `functools.update_wrapper` (behind `wraps`, `lru_cache`, `singledispatch`) copies
    attributes named by its caller and merges the wrapped object's `__dict__`: a class's or
    a module's would hand their internals to the code. It is replaced in the real module,
    so that functools' own callers use the checked version too.
    """
    import functools
    import operator
    import string

    real_attrgetter, real_methodcaller = operator.attrgetter, operator.methodcaller
    real_getattr, real_setattr = getattr, setattr

    def attrgetter(*names: str) -> Callable[[object], object]:
        for name in names:
            if type(name) is not str:
                raise TypeError("attribute name must be a str")
            for part in name.split("."):
                check_name(part)
        getter = real_attrgetter(*names)
        if len(names) == 1:
            return lambda obj: guard(getter(obj))
        return lambda obj: tuple(guard(value) for value in getter(obj))

    def methodcaller(name: str, *args: object, **kwargs: object) -> Callable[[object], object]:
        checked = check_name(name)
        if checked in _FORMAT_METHODS:
            return lambda obj: guard(real_getattr(obj, checked))(*args, **kwargs)  # type: ignore[operator]
        caller = real_methodcaller(checked, *args, **kwargs)
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
        value, first = real_get_field(self, field_name, args, kwargs)
        return guard(value), first

    string.Formatter.get_field = get_field  # type: ignore[method-assign]

    is_class = 1 << 31
    flags_of = type.__dict__["__flags__"].__get__
    module_type = type(functools)

    def update_wrapper(
        wrapper: Any,
        wrapped: Any,
        assigned: tuple[str, ...] = functools.WRAPPER_ASSIGNMENTS,
        updated: tuple[str, ...] = functools.WRAPPER_UPDATES,
    ) -> Any:
        for name in assigned:
            try:
                value = real_getattr(wrapped, check_name(name))
            except AttributeError:
                pass
            else:
                real_setattr(wrapper, name, guard(value))
        for name in updated:
            if type(name) is str and name == "__dict__":
                if flags_of(type(wrapped)) & is_class or isinstance(wrapped, module_type):
                    continue  # a class's or a module's namespace: never merged
            else:
                check_name(name)
            real_getattr(wrapper, name).update(real_getattr(wrapped, name, {}))
        real_setattr(wrapper, "__wrapped__", wrapped)
        return wrapper

    functools.update_wrapper = update_wrapper  # type: ignore[assignment]
    if "functools" in copies:
        setattr(copies["functools"], "update_wrapper", update_wrapper)


def _patch_typing(
    refuse: Callable[[str], NoReturn],
    safe_builtins: dict[str, object],
    namespace: dict[str, Any],
    runner_globals: dict[str, Any],
) -> None:
    """Keep `typing`'s evaluation of string hints inside the code's own namespaces.

    `ForwardRef._evaluate` (behind `get_type_hints`) evaluates a hint in a namespace typing
    picks: a function's `__globals__`, the module named by a class's `__module__` (which
    the code sets), a given dict. Another module's namespace would hand its globals to the
    code, and a dict without `__builtins__` gets the real builtins from eval(). So: no
    module's namespace but the code's own, and the sandbox's builtins where none are given.
    """
    import sys

    typing = sys.modules.get("typing")
    if typing is None:
        return
    forward_ref = typing.ForwardRef
    real_evaluate = forward_ref._evaluate
    modules = sys.modules
    reason = "evaluating a type hint outside the code's own namespace is not allowed"

    def foreign(space: object) -> bool:
        if space is None or space is namespace:
            return False
        if space is runner_globals:
            return True
        for module in list(modules.values()):
            try:
                if space is getattr(module, "__dict__", None):
                    return True
            except Exception:
                continue
        return False

    def evaluate(self: Any, globalns: Any, localns: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "__forward_module__", None) is not None or foreign(globalns) or foreign(localns):
            refuse(reason)
        if globalns is None:
            globalns = {} if localns is None else localns
        if type(globalns) is not dict:
            refuse("type hints can only be evaluated in a plain dict namespace")
        if "__builtins__" not in globalns:
            globalns["__builtins__"] = safe_builtins
        return real_evaluate(self, globalns, localns, *args, **kwargs)

    forward_ref._evaluate = evaluate


def _denied_name(tree: ast.AST) -> str | None:
    """Where the source spells a refused name: the first such place, described, or None.

    Attribute names (`x.__dict__`, class patterns' keywords, `from m import __dict__`),
    bound names (variables, parameters, functions, classes, keyword arguments), and
    `format`/`format_map` where their value would reach the code unchecked (patterns,
    augmented assignment).
    """
    import ast

    for node in ast.walk(tree):
        line = getattr(node, "lineno", None)
        if isinstance(node, ast.match_case):
            for part in ast.walk(node.pattern):
                if isinstance(part, ast.Attribute) and part.attr in _FORMAT_METHODS:
                    return f"line {part.lineno}: the attribute {part.attr!r} is not allowed in a pattern"
            continue
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Attribute):
            if node.target.attr in _FORMAT_METHODS:
                return f"line {line}: updating the attribute {node.target.attr!r} in place is not allowed"
        attributes: list[str] = []
        names: list[str] = []
        if isinstance(node, ast.Attribute):
            attributes = [node.attr]
        elif isinstance(node, ast.MatchClass):
            attributes = list(node.kwd_attrs)
            in_pattern = sorted(_FORMAT_METHODS & set(attributes))
            if in_pattern:
                return f"line {line}: the attribute {in_pattern[0]!r} is not allowed in a pattern"
        elif isinstance(node, ast.ImportFrom):
            attributes = [alias.name for alias in node.names]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.keyword) and node.arg is not None:
            names = [node.arg]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.alias) and node.asname is not None:
            names = [node.asname]
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names = list(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name is not None:
            names = [node.name]
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name is not None:
            names = [node.name]
        elif isinstance(node, ast.MatchMapping) and node.rest is not None:
            names = [node.rest]
        for name in attributes:
            if name in _DENIED_ATTRIBUTES:
                return f"line {line}: the attribute {name!r} is not allowed"
        for name in names:
            if name in _DENIED_NAMES:
                return f"line {line}: the name {name!r} is not allowed"
    return None


def _rewrite(tree: ast.Module) -> ast.Module:
    """Route the program's dynamic attribute reads through the run-time checks.

    `x.format` and `x.format_map` (loads) become `<sandbox attr>(x, name)`, whose value
    checks the format string's fields when called. A class pattern with positional
    sub-patterns gets its class from `<sandbox classes>` (see `_match_classes`): the
    match statement is preceded by an assignment of the helper, given each such class as a
    lambda, evaluated when its case is tried, or as a value in a class body, where a
    lambda would not see the class's names. A class body that uses the helpers declares
    them global, so that a metaclass's `__prepare__` mapping cannot answer for them.
    """
    import ast
    import sys

    counter = [0]
    scopes: list[set[str] | None] = [None]  # per scope: None for module or function, names to declare for a class

    def use(*names: str) -> None:
        declared = scopes[-1]
        if declared is not None:
            declared.update(names)

    class Rewriter(ast.NodeTransformer):
        def statements(self, body: list[ast.stmt]) -> list[ast.stmt]:
            result: list[ast.stmt] = []
            for statement in body:
                new = self.visit(statement)
                result.extend(new if isinstance(new, list) else [new])
            return result

        def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
            node.decorator_list = [self.visit(item) for item in node.decorator_list]
            node.bases = [self.visit(item) for item in node.bases]
            node.keywords = [self.visit(item) for item in node.keywords]
            declared: set[str] = set()
            scopes.append(declared)
            node.body = self.statements(node.body)
            scopes.pop()
            if declared:
                first = node.body[0]
                docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                docstring = docstring and isinstance(first.value.value, str)  # type: ignore[attr-defined]
                node.body.insert(1 if docstring else 0, ast.copy_location(ast.Global(sorted(declared)), first))
            return node

        def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
            node.decorator_list = [self.visit(item) for item in node.decorator_list]
            node.args = self.visit(node.args)
            if node.returns is not None:
                node.returns = self.visit(node.returns)
            scopes.append(None)
            node.body = self.statements(node.body)
            scopes.pop()
            return node

        def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AsyncFunctionDef:
            return self.visit_FunctionDef(node)  # type: ignore[arg-type,return-value]  # the same fields

        def visit_Lambda(self, node: ast.Lambda) -> ast.Lambda:
            node.args = self.visit(node.args)
            scopes.append(None)
            node.body = self.visit(node.body)
            scopes.pop()
            return node

        def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
            self.generic_visit(node)
            if isinstance(node.ctx, ast.Load) and node.attr in _FORMAT_METHODS:
                use(_ATTR_HELPER)
                helper = ast.Name(_ATTR_HELPER, ast.Load())
                return ast.copy_location(ast.Call(helper, [node.value, ast.Constant(node.attr)], []), node)
            return node

        def visit_Match(self, node: ast.Match) -> ast.stmt | list[ast.stmt]:
            node.subject = self.visit(node.subject)
            temp = f"<sandbox match {counter[0]}>"
            counter[0] += 1
            sources: list[ast.expr] = []
            for case in node.cases:
                self.pattern(case.pattern, temp, sources)
                if case.guard is not None:
                    case.guard = self.visit(case.guard)
                case.body = self.statements(case.body)
            if not sources:
                return node
            lazy = scopes[-1] is None
            no_arguments = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
            values = [ast.copy_location(ast.Lambda(no_arguments, s), s) if lazy else s for s in sources]
            helper = ast.Name(_CLASSES_HELPER, ast.Load())
            assign = ast.Assign([ast.Name(temp, ast.Store())], ast.Call(helper, [ast.Constant(lazy), *values], []))
            use(temp, _CLASSES_HELPER)
            return [ast.copy_location(assign, node), node]

        def pattern(self, pattern: ast.pattern, temp: str, sources: list[ast.expr]) -> None:
            if isinstance(pattern, ast.MatchClass):
                for part in (*pattern.patterns, *pattern.kwd_patterns):
                    self.pattern(part, temp, sources)
                if pattern.patterns:
                    sources.append(self.visit(pattern.cls))
                    stand_in = ast.Attribute(ast.Name(temp, ast.Load()), f"c{len(sources) - 1}", ast.Load())
                    pattern.cls = ast.copy_location(stand_in, pattern.cls)
            elif isinstance(pattern, ast.MatchAs) and pattern.pattern is not None:
                self.pattern(pattern.pattern, temp, sources)
            elif isinstance(pattern, (ast.MatchOr, ast.MatchSequence, ast.MatchMapping)):
                for part in pattern.patterns:
                    self.pattern(part, temp, sources)

    depth = sys.getrecursionlimit()
    sys.setrecursionlimit(max(depth, 20_000))  # deeper than compile() goes: the rewrite never refuses first
    try:
        result = Rewriter().visit(tree)
    finally:
        sys.setrecursionlimit(depth)
    return ast.fix_missing_locations(result)  # type: ignore[no-any-return]


def _confine(program_hex: str) -> str:
    """Load the parent's seccomp-bpf filter into this process: "" when done, else why not.

    `no_new_privs` first (the kernel requires it of a process without CAP_SYS_ADMIN); the
    filter then holds for the rest of the process's life: nothing can remove it.
    """
    import os

    try:
        import ctypes

        program = bytes.fromhex(program_hex)
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        prctl.restype = ctypes.c_int

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        buffer = ctypes.create_string_buffer(program, len(program))
        fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
        if prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
        if prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            return f"the kernel refused the seccomp filter: {os.strerror(ctypes.get_errno())}"
    except (ImportError, OSError, ValueError, AttributeError, TypeError) as error:
        return f"cannot load the seccomp filter: {type(error).__name__}: {error}"
    return ""


def _seal(copies: dict[str, ModuleType]) -> None:
    """Remove primitives that raise no audit event but reach past the process.

    The loaders that bypass the import system (and its audit event), and the calls that
    signal or re-group other processes or create device nodes. Done after the runner's
    own set-up, which needs some of them, and before the code runs; from the code's
    copies of those modules too.
    """
    import _imp
    import sys

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


def _audit_hook(frames_ok: list[bool], refuse: Callable[[str], NoReturn]) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook: every event but a few harmless ones is refused and recorded.

    Everything it consults is bound here, in its closure, so that code which reaches
    the runner's globals or patches builtins cannot change what the hook decides.
    """
    harmless, protected, short, is_template, is_hint = (
        _HARMLESS_EVENTS,
        _PROTECTED_ATTRIBUTES,
        _short,
        _is_namedtuple_source,
        _is_type_hint,
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


def _short(value: object) -> str:
    """A short repr of an audit argument, without calling the code's own methods."""
    if type(value) in (str, bytes, int):
        text = repr(value)
        return text if len(text) <= 120 else text[:120] + "..."
    return f"<{type(value).__name__}>"


def _is_namedtuple_source(source: object) -> bool:
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


def _is_type_hint(source: object) -> bool:
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


def _traceback(error: BaseException) -> list[tuple[int, str]]:
    """(line, function) for each frame of the code itself, outermost first."""
    entries: list[tuple[int, str]] = []
    tb = vars(BaseException)["__traceback__"].__get__(error)  # not a `__traceback__` the code overrode
    while tb is not None:
        frame_code = tb.tb_frame.f_code
        if frame_code.co_filename == _PROGRAM_FILENAME:
            entries.append((tb.tb_lineno, frame_code.co_name))
        tb = tb.tb_next
    return entries


def _describe(error: BaseException, entries: list[tuple[int, str]], code: str, stdout: str) -> dict[str, object]:
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
    detail = _text(error, 1000)
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


if __name__ == "__main__":
    main()
