"""Where the user's code is, and warnings that point at it.

The user's code is the nearest caller that is neither lmdsl nor a library (the standard
library, installed packages, console scripts such as `lmdsl` itself). A warning points at
that line however deep the call; in a worker thread (`map`, `evaluate`), whose own stack
holds no user code, at the line that handed it the work (`handing_off`); failing both (a program run
by the `lmdsl` command), at the definition given as `at`.

A warning is said once, as a warning: lmdsl does not log it as well. lmdsl's log records
go only where the application's logging sends them (the `lmdsl` logger has a
`NullHandler`), so an unconfigured program does not get them printed by logging's
last-resort handler beside the warnings; `logging.captureWarnings(True)` sends the
warnings to logging too.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType, TracebackType
from typing import Any

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

logging.getLogger("lmdsl").addHandler(logging.NullHandler())

# The frame that handed work to other threads (`handing_off`), seen in their copied contexts.
_HANDED_OFF_FROM: ContextVar[FrameType | None] = ContextVar("lmdsl_handed_off_from", default=None)


@contextmanager
def handing_off(frame: FrameType) -> Iterator[None]:
    """Within the block, contexts copied to worker threads remember `frame` as where their work
    came from, so a warning raised there points at the user's line that started it."""
    token = _HANDED_OFF_FROM.set(frame)
    try:
        yield
    finally:
        _HANDED_OFF_FROM.reset(token)


@functools.cache
def _library_roots() -> tuple[str, ...]:
    """Folders whose files are not the user's code: lmdsl, the standard library, installed
    packages and console scripts, of this environment and of the Python it was made from."""
    import sysconfig  # on the first warning, not on `import lmdsl`

    roots = {_PACKAGE}
    base = {
        "base": sys.base_prefix,
        "platbase": sys.base_exec_prefix,
        "installed_base": sys.base_prefix,
        "installed_platbase": sys.base_exec_prefix,
    }
    for variables in ({}, base):
        paths = sysconfig.get_paths(vars=variables)
        for key in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):
            if key in paths:
                roots.add(os.path.join(os.path.abspath(paths[key]), ""))
    return tuple(sorted(roots))


def is_user_file(filename: str) -> bool:
    """Whether code in `filename` is the user's: not lmdsl, not a library, not frozen."""
    return not filename.startswith("<frozen") and not filename.startswith(_library_roots())


def _outside_lmdsl(frame: FrameType | None, *, user: bool) -> FrameType | None:
    while frame is not None:
        filename = frame.f_code.co_filename
        if is_user_file(filename) if user else not filename.startswith(_PACKAGE):
            return frame
        frame = frame.f_back
    return None


def user_frame(frame: FrameType | None = None) -> FrameType | None:
    """The innermost frame of the user's code from `frame` (default: the caller) outward; in
    a worker thread whose stack holds none, the one from where its work was handed off."""
    found = _outside_lmdsl(frame if frame is not None else sys._getframe(1), user=True)
    if found is None:
        found = _outside_lmdsl(_HANDED_OFF_FROM.get(), user=True)
    return found


def caller_file() -> str | None:
    """The file of the nearest caller outside lmdsl (a library counts), if it is a file."""
    frame = _outside_lmdsl(sys._getframe(1), user=False)
    if frame is None or not os.path.isfile(frame.f_code.co_filename):
        return None
    return frame.f_code.co_filename


def error_site(error: BaseException) -> tuple[str, int] | None:
    """The deepest line of the user's code in an error's traceback: where the user's code
    raised, or called what raised."""
    found: tuple[str, int] | None = None
    traceback: TracebackType | None = error.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if is_user_file(filename):
            found = (filename, traceback.tb_lineno)
        traceback = traceback.tb_next
    return found


def warn_user(message: str, category: type[Warning], *, at: Callable[..., Any] | None = None) -> None:
    """Warn, pointing at the user's code: the nearest caller of it (see the module docstring),
    else the definition of `at` (a function of the user's), else the nearest caller outside lmdsl.
    Filters and the once-per-location rule work as for `warnings.warn`."""
    frame = user_frame(sys._getframe(1))
    if frame is not None:
        filename, line, namespace = frame.f_code.co_filename, frame.f_lineno, frame.f_globals
    else:
        code = getattr(at, "__code__", None)
        if code is None:
            outside = _outside_lmdsl(sys._getframe(1), user=False) or sys._getframe(1)
            filename, line, namespace = outside.f_code.co_filename, outside.f_lineno, outside.f_globals
        else:
            filename, line, namespace = code.co_filename, code.co_firstlineno, getattr(at, "__globals__", {})
    module, registry = namespace.get("__name__", "<unknown>"), namespace.setdefault("__warningregistry__", {})
    try:
        warnings.warn_explicit(message, category, filename, line or 0, module, registry, module_globals=namespace)
    except ImportError:  # code run by `python -c` or from stdin: its loader has no source to show
        warnings.warn_explicit(message, category, filename, line or 0, module, registry)
